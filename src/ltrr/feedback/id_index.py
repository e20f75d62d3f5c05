"""The ids an event log holds, as sorted 128-bit hashes on disk beside it, so that a new
batch of events is checked for ids already logged in time that grows with the log's
size only as log(size): no scan of the log, nothing held in memory but mapped pages.

``<events>/ids/``: ``manifest.json`` (format, hasher, the last append covered and how many
appends that is, the runs) and the runs — sorted hash arrays ``run-<id>.h1.npy`` /
``.h2.npy`` (the two 64-bit halves), opened memory-mapped. Each append adds a run of its
ids' hashes; runs are merged so their sizes stay geometric (at most ~log₂(size) of them),
like an LSM tree's levels. The manifest is the commit point (written atomically); run
files it does not name are leftovers of a crash and removed.

Kept honest by the log itself: appends are named in order (the log is monotonic) and
survive compaction under their names (``ParquetLog.pieces``), so the index covers "every
append up to X". An append not covered yet (a writer stopped between writing its part
and the index) is read and added; one that vanished (a damaged part quarantined), or a
rewrite that drops rows (``quarantine_invalid`` invalidates the index), rebuilds it from
the log — what was quarantined can be sent again, as before the index existed.

Used under the log's append lock only (:meth:`EventLog.append_unlogged`). Two ids are
taken for one only if both 64-bit hashes collide (~10⁻²⁰ at 10⁸ events).
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ltrr.state import atomic_write, atomic_write_json

if TYPE_CHECKING:
    from ltrr.feedback.events import EventLog

FORMAT = 1
FOLDER = "ids"
_SEEDS = (11, 23)


def hasher() -> str:
    """What the hashes depend on: polars' hash is stable within a version only."""
    return f"polars-{pl.__version__}-{_SEEDS}"


def hashes(ids: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit hashes of each id: of the id, and of the id reversed (another input,
    so a collision of the one says nothing of the other)."""
    ids = ids.cast(pl.String)
    return (ids.hash(seed=_SEEDS[0]).to_numpy().astype(np.uint64),
            ids.str.reverse().hash(seed=_SEEDS[1]).to_numpy().astype(np.uint64))


class IdIndex:
    """Hashes of the ids of ``elog`` (see the module docstring). One per process and log
    is enough: it re-reads the manifest on every :meth:`sync`, so appends by other
    processes are seen, and keeps the runs it mapped."""

    def __init__(self, elog: "EventLog"):
        self.elog = elog
        self.folder = elog.directory / FOLDER
        self._maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.manifest: dict = {}

    # --- the manifest -----------------------------------------------------------------

    def _read(self) -> dict:
        try:
            m = json.loads((self.folder / "manifest.json").read_text())
        except (OSError, ValueError):
            return {}
        if m.get("format") != FORMAT or m.get("hasher") != hasher():
            return {}
        return m

    def _write(self, m: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.folder / "manifest.json", m)
        self.manifest = m
        named = {f"{r}.{h}.npy" for r, _ in m["runs"] for h in ("h1", "h2")}
        for f in self.folder.glob("run-*.npy"):
            if f.name not in named:
                f.unlink(missing_ok=True)
                self._maps.pop(f.name.split(".")[0], None)

    def invalidate(self) -> None:
        """Forget everything: the next :meth:`sync` rebuilds from the log."""
        (self.folder / "manifest.json").unlink(missing_ok=True)
        self.manifest = {}

    # --- keeping up with the log --------------------------------------------------------

    def sync(self) -> None:
        """Cover every append of the log: add those written since, rebuild when one the
        index covered is gone."""
        m = self._read()
        pieces = self.elog.pieces()
        last, count = m.get("last"), m.get("count", 0)
        covered = [p for p in pieces if last is not None and p.name <= last]
        if not m or len(covered) != count:
            self._rebuild()
            return
        new = [p for p in pieces if p.name > last]
        self.manifest = m
        live = {r for r, _ in m["runs"]}
        for run in [r for r in self._maps if r not in live]:     # merged by another writer
            del self._maps[run]
        if new:
            ids = self.elog.read_pieces(new)["event_id"]
            # a damaged part among them was quarantined by the read: count what is left
            self._add_run(ids, *self._covering())

    def _covering(self) -> tuple[str | None, int]:
        """(last append, number of appends) of the log as it is now."""
        pieces = self.elog.pieces()
        return (pieces[-1].name if pieces else None), len(pieces)

    def _rebuild(self) -> None:
        ids = self.elog.scan(self.elog.parts(), lambda ps: pl.scan_parquet(ps).select(
            "event_id").collect()["event_id"] if ps else pl.Series([], dtype=pl.String))
        m = {"format": FORMAT, "hasher": hasher(), "last": None, "count": 0, "runs": []}
        self.manifest = m
        self._add_run(ids, *self._covering(), merge=False)

    def add(self, ids: pl.Series, piece: str) -> None:
        """Cover the append ``piece`` (just written) holding ``ids``."""
        self._add_run(ids, piece, self.manifest.get("count", 0) + 1)

    def _add_run(self, ids: pl.Series, last: str | None, count: int,
                 merge: bool = True) -> None:
        runs = list(self.manifest.get("runs", []))
        if ids.len():
            h1, h2 = hashes(ids)
            runs.append(self._save(h1, h2))
        while merge and len(runs) > 1 and runs[-2][1] <= 2 * runs[-1][1]:
            (a, _), (b, _) = runs[-2], runs[-1]
            a1, a2 = self._map(a)
            b1, b2 = self._map(b)
            runs[-2:] = [self._save(np.concatenate([a1, b1]), np.concatenate([a2, b2]))]
        self._write({"format": FORMAT, "hasher": hasher(), "last": last, "count": count,
                     "runs": runs})

    def _save(self, h1: np.ndarray, h2: np.ndarray) -> list:
        order = np.lexsort((h2, h1))
        name = f"run-{uuid.uuid4().hex[:12]}"
        self.folder.mkdir(parents=True, exist_ok=True)
        for half, values in (("h1", h1[order]), ("h2", h2[order])):
            atomic_write(self.folder / f"{name}.{half}.npy", lambda f, v=values: np.save(f, v))
        return [name, int(len(order))]

    def _map(self, run: str) -> tuple[np.ndarray, np.ndarray]:
        if run not in self._maps:
            self._maps[run] = tuple(np.load(self.folder / f"{run}.{h}.npy", mmap_mode="r")
                                    for h in ("h1", "h2"))
        return self._maps[run]

    # --- lookups ------------------------------------------------------------------------

    def known(self, ids: pl.Series) -> np.ndarray:
        """Whether each id is logged (after :meth:`sync`)."""
        q1, q2 = hashes(ids)
        found = np.zeros(len(q1), dtype=bool)
        for run, size in self.manifest.get("runs", []):
            if not size:
                continue
            r1, r2 = self._map(run)
            pos = np.searchsorted(r1, q1)
            inside = pos < size
            hit = np.zeros(len(q1), dtype=bool)
            hit[inside] = r1[pos[inside]] == q1[inside]
            for i in np.flatnonzero(hit & ~found):     # few: the ids sent twice
                j = int(pos[i])
                while j < size and r1[j] == q1[i]:
                    if r2[j] == q2[i]:
                        found[i] = True
                        break
                    j += 1
        return found

