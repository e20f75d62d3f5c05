"""The catalog's ids and titles, memory-mapped: row ↔ id and id → title without loading
the catalog.

``ltrr index`` writes it (:func:`write_catalog_map`) into ``<state_dir>/_catalog/``, for
the catalog content it was built from; a :class:`~ltrr.catalog.Catalog` uses it while
that content is unchanged, so serving a catalog of millions of entities neither reads
the table nor holds a Python list and dict of its ids (1.76 M ids: ~200 MB per process,
2 s).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Iterator

from ltrr.mapped import Vocabulary, map_array, map_arrow, write_arrow
from ltrr.state import atomic_dir, atomic_write_json

MANIFEST = "catalog.json"
IDS = "ids"                   # the ids (Vocabulary)
ROW_OF = "row_of.npy"         # vocabulary id → catalog row
ID_OF = "id_of.npy"           # catalog row → vocabulary id
TITLES = "titles.arrow"       # catalog row → title (when the spec names a title column)


class MappedIds(Sequence):
    """The catalog's ids in row order (``ids[row]``), and ``row_of(id)``."""

    def __init__(self, vocab: Vocabulary, row_of, id_of):
        self._vocab, self._row_of, self._id_of = vocab, row_of, id_of

    def __len__(self) -> int:
        return len(self._id_of)

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        return self._vocab.key(int(self._id_of[row]))

    def __iter__(self) -> Iterator[str]:
        key, id_of = self._vocab.key, self._id_of
        for start in range(0, len(id_of), 65536):
            for i in id_of[start:start + 65536].tolist():
                yield key(i)

    def row_of(self, entity_id: str) -> int | None:
        i = self._vocab.id(entity_id)
        return None if i < 0 else int(self._row_of[i])


class CatalogMap:
    """The mapped ids (and titles) of one catalog content (see :func:`open_catalog_map`)."""

    def __init__(self, folder: Path):
        vocab = Vocabulary.open(folder, IDS)
        self.ids = MappedIds(vocab, map_array(folder / ROW_OF), map_array(folder / ID_OF))
        self._titles = None
        if (folder / TITLES).is_file():
            self._titles = map_arrow(folder / TITLES).column("title")
        if len(vocab) != len(self.ids) or (self._titles is not None
                                           and len(self._titles) != len(self.ids)):
            raise ValueError(f"the catalog map in {folder} is inconsistent")

    def title(self, row: int) -> str | None:
        return None if self._titles is None else self._titles[row].as_py()


def open_catalog_map(folder: Path, fingerprint: str, id_column: str,
                     title: str | None) -> CatalogMap | None:
    """The map in ``folder`` if it was written for this catalog content, id column and
    title column; None otherwise (not built, or built from another catalog)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest != {"fingerprint": fingerprint, "id_column": id_column, "title": title}:
        return None
    try:
        return CatalogMap(folder)
    except (OSError, ValueError):
        return None                      # damaged: the catalog is read instead


def write_catalog_map(folder: Path, ids: list[str], titles: list[str | None] | None,
                      fingerprint: str, id_column: str, title: str | None) -> None:
    """Write the map of a catalog's ``ids`` (unique, in row order) and ``titles``
    atomically into ``folder`` (replacing a previous one)."""
    import numpy as np
    import pyarrow as pa

    with atomic_dir(folder) as tmp:
        vocab_ids = Vocabulary.write(tmp, IDS, ids)
        row_of = np.empty(len(ids), dtype=np.int64)
        row_of[vocab_ids] = np.arange(len(ids), dtype=np.int64)
        np.save(tmp / ROW_OF, row_of)
        np.save(tmp / ID_OF, vocab_ids)
        if titles is not None:
            write_arrow(tmp / TITLES, pa.table({"title": pa.array(titles, pa.string())}))
        atomic_write_json(tmp / MANIFEST, {"fingerprint": fingerprint, "id_column": id_column,
                                           "title": title})
