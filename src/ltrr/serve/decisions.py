"""The decision log, written off the request path in larger parts.

The pipeline would write one Parquet part per batch, fsync included, on the batch's
thread; with micro-batches of a few queries that is a few milliseconds of every
batch and thousands of tiny parts, which every learning run then scans. The server
opens its pipeline without logging and hands each batch's decisions to this writer,
which appends them with the same :class:`~ltrr.runtime.decision_log.DecisionLog`
(same folder, same schema) in one part per ``flush_ms`` (or ``max_rows``).

Durability: a decision is durable at most ``flush_ms`` after its answer, and always
before any feedback event received after it is acknowledged (``/feedback`` calls
:meth:`DecisionWriter.flush` first), so an acknowledged event never outlives the
decision it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ltrr.runtime.decision_log import DecisionLog
    from ltrr.types import Decision

log = logging.getLogger("ltrr.serve")

MAX_PENDING = 200_000     # decisions kept while the log cannot be written (then: dropped)


class DecisionWriter:
    """Background appender of decisions; :meth:`flush` waits until all added are durable."""

    def __init__(self, flush_ms: float = 200.0, max_rows: int = 2000):
        self.flush_s = flush_ms / 1000.0
        self.max_rows = max_rows
        self._pending: list[tuple["DecisionLog", list["Decision"]]] = []
        self._rows = 0
        self._oldest = 0.0
        self._added = 0          # sequence number of the last decision added
        self._written = 0        # ... of the last one written (or dropped)
        self._urgent = 0         # flush requested up to this sequence number
        self.error: str | None = None
        self.parts = 0
        self.dropped = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ltrr-decisions", daemon=True)
        self._thread.start()

    def add(self, dlog: "DecisionLog", decisions: list["Decision"]) -> None:
        with self._cond:
            first = not self._pending
            if first:
                self._oldest = time.monotonic()
            self._pending.append((dlog, decisions))
            self._rows += len(decisions)
            self._added += len(decisions)
            if first or self._rows >= self.max_rows:
                self._cond.notify_all()       # start the flush timer, or flush now

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every decision added so far is written; raise if that fails."""
        with self._cond:
            target = self._added
            if self._written >= target:
                return
            self._urgent = max(self._urgent, target)
            self._cond.notify_all()
            deadline = time.monotonic() + timeout
            while self._written < target:
                if self.error:
                    raise OSError(f"the decision log could not be written: {self.error}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the decision log was not written within "
                                       f"{timeout:.0f} s")
                self._cond.wait(remaining)

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is pending and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._pending and (self._stopping or self._urgent > self._written
                                          or self._rows >= self.max_rows
                                          or time.monotonic() - self._oldest >= self.flush_s):
                        break
                    if self._stopping and not self._pending:
                        return
                    wait = (self.flush_s - (time.monotonic() - self._oldest)
                            if self._pending else None)
                    self._cond.wait(wait)
                batch, self._pending = self._pending, []
                self._rows = 0
                seq = self._added
            error, left = self._write(batch)
            with self._cond:
                if error is None:
                    self.error = None
                    self._written = seq
                else:
                    self.error = error
                    rows = sum(len(d) for _, d in left)
                    if self._rows + rows <= MAX_PENDING and not self._stopping:
                        self._pending[:0] = left        # retry with what came meanwhile
                        self._rows += rows
                        self._oldest = time.monotonic()
                    else:
                        self.dropped += rows
                        log.error("dropped %d decisions that could not be logged", rows)
                        self._written = seq
                self._cond.notify_all()
            if error is not None:
                time.sleep(1.0)

    def _write(self, batch: list[tuple["DecisionLog", list["Decision"]]]
               ) -> tuple[str | None, list[tuple["DecisionLog", list["Decision"]]]]:
        """Append ``batch`` (one part per log folder); the error and what is left."""
        by_log: dict[str, tuple["DecisionLog", list["Decision"]]] = {}
        for dlog, decisions in batch:
            by_log.setdefault(str(dlog.directory), (dlog, []))[1].extend(decisions)
        groups = list(by_log.values())
        for i, (dlog, decisions) in enumerate(groups):
            try:
                dlog.append(decisions)
            except Exception as exc:
                log.exception("writing the decision log failed")
                return f"{type(exc).__name__}: {exc}", groups[i:]
            self.parts += 1
        return None, []
