"""Request ids name one decision each.

Feedback names the decision it answers by ``request_id``; an id used by two logged
decisions would credit an engagement to whichever the join picks (a Radiohead click
learned under "daft punk"). So a client-chosen id already used by a logged decision
is refused — ``/search`` answers 409, ``ltrr run`` exits with an error — rather than
made unique behind the client's back: a client that kept its own id would still send
feedback under it, and the server could not tell which decision it meant. Ids the
server generates (UUID4) are unique by construction.

:class:`UsedRequestIds` keeps 64-bit hashes of the ids in the decision log (read once,
then the parts other processes append, at most every ``refresh_s``) in a sorted
array — 8 bytes per logged decision — plus the ids claimed since. A hash collision
(about 1 in 10^12 at a million decisions) would refuse an unused id with a 409.

Claims are shared at once by every process serving the log (``--workers``): each claim
and release of a client-chosen id is a 16-byte record appended to
``<decisions>/.claimed`` under an exclusive ``flock``, and a claim first reads the
records the others appended. One id sent to two workers at the same moment is one
decision and one 409. The file grows 16 bytes per client-chosen id and is read in full
by a process that starts; a claim whose request neither finished nor was released (the
process was killed) keeps its id refused.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ltrr.runtime.decision_log import DecisionLog

MERGE_EVERY = 100_000      # claimed hashes kept in a set before they join the sorted array
CLAIMS = ".claimed"        # shared claims: records of (hash, op) in the decision log's folder
RECORD = 16
CLAIM, RELEASE = 0, 1


def _record(h: int, op: int) -> bytes:
    import numpy as np

    return np.array([h, op], dtype=np.uint64).tobytes()


def _hashes(ids) -> "object":
    """uint64 hashes of a polars Series (or list) of request ids, as a numpy array."""
    import polars as pl

    return pl.Series(ids, dtype=pl.String).hash(seed=0).to_numpy()


class UsedRequestIds:
    """The request ids used by decisions of one decision log; :meth:`claim` takes one."""

    def __init__(self, dlog: "DecisionLog", refresh_s: float = 1.0):
        import numpy as np

        self.dlog = dlog
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._parts: set[str] = set()
        self._checked = 0.0
        self._refresh()
        self._fd: int | None = None            # the shared claims file, opened when needed
        self._offset = 0                       # its bytes applied so far

    @property
    def directory(self) -> Path:
        return self.dlog.directory

    def _refresh(self) -> None:
        """Add the ids of decision-log parts not read yet."""
        import numpy as np
        import polars as pl

        self._checked = time.monotonic()
        if not self.dlog.directory.is_dir():
            return
        parts = [p for p in sorted(self.dlog.directory.glob("part-*.parquet"))
                 if p.name not in self._parts]
        if not parts:
            return
        frames = []
        for part in parts:
            try:
                frames.append(pl.read_parquet(part, columns=["request_id"])["request_id"])
            except Exception:             # gone (compacted) or damaged: the log's business
                continue
            self._parts.add(part.name)
        if frames:
            fresh = _hashes(pl.concat(frames))
            self._sorted = np.unique(np.concatenate([self._sorted, fresh]))

    # --- claims shared between processes ----------------------------------------------

    def _claims(self, exclusive: bool) -> int:
        """The claims file's descriptor, locked, with the others' new records applied."""
        if self._fd is None:
            self.dlog.directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.dlog.directory / CLAIMS,
                               os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        size = os.fstat(self._fd).st_size
        whole = size - size % RECORD
        if exclusive and whole != size:          # a writer killed mid-record
            os.ftruncate(self._fd, whole)
        if whole > self._offset:
            self._apply(os.pread(self._fd, whole - self._offset, self._offset))
            self._offset = whole
        return self._fd

    def _apply(self, data: bytes) -> None:
        import numpy as np

        records = np.frombuffer(data, dtype=np.uint64).reshape(-1, 2)
        for h, op in records.tolist():
            if op == CLAIM:
                self._recent.add(h)
            elif h in self._recent:
                self._recent.discard(h)
            else:                                # merged into the array meanwhile
                self._sorted = self._sorted[self._sorted != np.uint64(h)]

    def _append(self, fd: int, h: int, op: int) -> None:
        os.write(fd, _record(h, op))
        self._offset += RECORD

    def close(self) -> None:
        """Close the shared claims file (it reopens when needed)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self._offset = 0

    def _known(self, h: int) -> bool:
        import numpy as np

        if h in self._recent:
            return True
        i = int(np.searchsorted(self._sorted, np.uint64(h)))
        return i < len(self._sorted) and int(self._sorted[i]) == h

    def used(self, request_id: str) -> bool:
        """Whether a logged (or claimed) decision has this id."""
        h = int(_hashes([request_id])[0])
        with self._lock:
            if time.monotonic() - self._checked >= self.refresh_s:
                self._refresh()
            fd = self._claims(exclusive=False)
            try:
                return self._known(h)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def claim(self, request_id: str) -> bool:
        """Take ``request_id`` for a new decision: False if it is used already."""
        import numpy as np

        h = int(_hashes([request_id])[0])
        with self._lock:
            if time.monotonic() - self._checked >= self.refresh_s:
                self._refresh()
            fd = self._claims(exclusive=True)
            try:
                if self._known(h):
                    return False
                self._append(fd, h, CLAIM)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._recent.add(h)
            if len(self._recent) >= MERGE_EVERY:
                fresh = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
                self._sorted = np.unique(np.concatenate([self._sorted, fresh]))
                self._recent = set()
        return True

    def release(self, request_id: str) -> None:
        """Give back an id whose request failed before its decision was made."""
        h = int(_hashes([request_id])[0])
        with self._lock:
            fd = self._claims(exclusive=True)
            try:
                self._append(fd, h, RELEASE)
                self._apply(_record(h, RELEASE))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


class ServedRequestIds:
    """The :class:`UsedRequestIds` of the decision log being served (read when first
    needed; read afresh when a reload changes the log's folder)."""

    def __init__(self):
        self._used: UsedRequestIds | None = None
        self._lock = threading.Lock()

    def of(self, dlog: "DecisionLog | None") -> UsedRequestIds | None:
        """None when decisions are not logged (feedback cannot name them then)."""
        if dlog is None:
            return None
        with self._lock:
            if self._used is None or self._used.directory != dlog.directory:
                if self._used is not None:
                    self._used.close()
                self._used = UsedRequestIds(dlog)
            return self._used


def reused_message(request_id: str) -> tuple[str, str]:
    """The error and hint for a reused id (the same words for HTTP and the CLI)."""
    return (f"request_id '{request_id}' is already used by a logged decision; feedback "
            "naming it could not say which decision it answers",
            "use a new request_id for every search (omit it and the server generates one)")


def check_unused(dlog: "DecisionLog", request_ids: list[str], source: Path) -> None:
    """Refuse to log decisions under ids (a query file's, read from ``source``) that
    appear twice or are used by a decision of ``dlog`` already (``ltrr run``)."""
    import numpy as np

    from ltrr.errors import Location, RunError

    seen: set[str] = set()
    for rid in request_ids:
        if rid in seen:
            lines = _lines_of(source, rid)
            raise RunError(f"query id '{rid}' appears twice (lines {', '.join(map(str, lines))});"
                           " each logged decision needs its own request id",
                           where=Location(str(source), lines[-1] if lines else None),
                           field="id", hint="give every query its own id, or run with --no-log")
        seen.add(rid)
    if not request_ids:
        return
    used = UsedRequestIds(dlog)
    try:
        fcntl.flock(used._claims(exclusive=False), fcntl.LOCK_UN)   # a live server's claims
        known = np.concatenate([used._sorted, np.fromiter(used._recent, dtype=np.uint64,
                                                          count=len(used._recent))])
    finally:
        used.close()
    hit = np.isin(_hashes(request_ids), known)
    if hit.any():
        rid = request_ids[int(np.argmax(hit))]
        lines = _lines_of(source, rid)
        raise RunError(f"query id '{rid}' is already the request id of a logged decision "
                       f"({int(hit.sum())} of {len(request_ids)} are); feedback naming it "
                       "could not say which decision it answers",
                       where=Location(str(source), lines[0] if lines else None), field="id",
                       hint="give the queries new ids, or run with --no-log (answers "
                            "without logging decisions)")


def _lines_of(source: Path, query_id: str) -> list[int]:
    """Lines of the query file ``source`` whose query has the id ``query_id`` (read again,
    on the error path only)."""
    from ltrr.runtime.queries import read_queries

    try:
        return [n for n, q in read_queries(source, with_lines=True) if q.request_id == query_id]
    except Exception:  # noqa: BLE001 - the located error is still raised without a line
        return []
