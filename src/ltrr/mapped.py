"""Index state that ``open`` maps instead of loading: open costs the same at any catalog
size, pages are read on first use, and every process serving the same index shares them.

* :class:`Vocabulary` — strings → ids in a memory-mapped trie (marisa-trie): exact
  lookup, id → string, and the keys of one length that share a prefix or a suffix
  (the blocks a fuzzy search compares with). 1.7 M artist names take ~6 MB.
* :func:`write_arrow` / :func:`map_arrow` — a table as an uncompressed Arrow IPC file,
  read back zero-copy over a memory map.
* :func:`map_array` — a ``.npy`` file as a read-only numpy memmap.

Files are written into the build's temp folder (``ltrr index`` renames it into place
when complete), so they never change once mapped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

_LENGTH = 0x100          # a key is stored behind one character coding its length


def _tag(length: int) -> str:
    return chr(_LENGTH + length)


class Vocabulary:
    """Unique strings with stable integer ids (``0 … len - 1``), memory-mapped.

    Each key is stored behind a character coding its length, in two tries: as is and
    reversed, so "the keys of length L beginning (or ending) with s" is one prefix
    walk of the trie, never a scan of the vocabulary.
    """

    def __init__(self, forward, backward, backward_ids: np.ndarray):
        self._fwd, self._bwd, self._bwd_ids = forward, backward, backward_ids

    @staticmethod
    def write(folder: Path, name: str, keys: list[str]) -> np.ndarray:
        """Write the vocabulary of ``keys`` (unique) as ``<name>.*`` files in
        ``folder``; return the id of each key, in the order given."""
        import marisa_trie

        fwd = marisa_trie.Trie([_tag(len(k)) + k for k in keys])
        bwd = marisa_trie.Trie([_tag(len(k)) + k[::-1] for k in keys])
        ids = np.fromiter((fwd[_tag(len(k)) + k] for k in keys), dtype=np.int64,
                          count=len(keys))
        if len(keys) and len(fwd) != len(keys):
            raise ValueError("vocabulary keys are not unique")
        back = np.empty(len(keys), dtype=np.int32)
        for k, i in zip(keys, ids.tolist()):
            back[bwd[_tag(len(k)) + k[::-1]]] = i
        fwd.save(str(folder / f"{name}.marisa"))
        bwd.save(str(folder / f"{name}.reversed.marisa"))
        np.save(folder / f"{name}.reversed.npy", back)
        return ids

    @classmethod
    def open(cls, folder: Path, name: str) -> "Vocabulary":
        """Map the vocabulary written by :meth:`write` (OSError if a file is missing)."""
        import marisa_trie

        fwd, bwd = marisa_trie.Trie(), marisa_trie.Trie()
        for trie, file in ((fwd, f"{name}.marisa"), (bwd, f"{name}.reversed.marisa")):
            path = folder / file
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing")
            trie.mmap(str(path))
        back = map_array(folder / f"{name}.reversed.npy")
        if len(back) != len(fwd) or len(bwd) != len(fwd):
            raise ValueError(f"the files of vocabulary '{name}' disagree")
        return cls(fwd, bwd, back)

    def __len__(self) -> int:
        return len(self._fwd)

    def id(self, key: str) -> int:
        """The id of ``key``, -1 if absent."""
        return self._fwd.get(_tag(len(key)) + key, -1)

    def key(self, i: int) -> str:
        return self._fwd.restore_key(i)[1:]

    def items(self) -> list[tuple[str, int]]:
        """Every (key, id), in no particular order."""
        return [(k[1:], i) for k, i in self._fwd.items()]

    def starting(self, length: int, prefix: str = "") -> list[tuple[str, int]]:
        """(key, id) of the keys of ``length`` characters beginning with ``prefix``."""
        return [(k[1:], i) for k, i in self._fwd.items(_tag(length) + prefix)]

    def ending(self, length: int, suffix: str) -> list[tuple[str, int]]:
        """(key, id) of the keys of ``length`` characters ending with ``suffix``."""
        back = self._bwd_ids
        return [(k[:0:-1], int(back[i])) for k, i in self._bwd.items(_tag(length)
                                                                      + suffix[::-1])]


def map_array(path: Path) -> np.ndarray:
    """A ``.npy`` file as a read-only memory map."""
    return np.load(path, mmap_mode="r")


def write_arrow(path: Path, table: "pa.Table") -> None:
    """Write ``table`` as an uncompressed Arrow IPC file (mappable as is)."""
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
        out.write_table(table)


def map_arrow(path: Path) -> "pa.Table":
    """The table of an Arrow IPC file, its buffers over a memory map (no copy)."""
    import pyarrow as pa

    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
