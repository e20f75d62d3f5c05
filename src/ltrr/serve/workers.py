"""Several worker processes behind one port: who learns, and how the others keep up.

``ltrr serve --workers N`` runs N processes, each with its own pipeline (the GIL
limits one process to about one core). Worker 0, the *leader*, learns: its
background learner catches every learner up on the shared event log, whichever
worker logged the events. The others, *followers*, answer searches and log feedback
and decisions like the leader, and never learn: after each learning run the leader
publishes which nodes learned (:func:`publish_learned`), and each follower's
:class:`Refresher` reopens those nodes from the state the leader wrote.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltrr.state import atomic_write_json

if TYPE_CHECKING:
    from ltrr.serve.holder import PipelineHolder

log = logging.getLogger("ltrr.serve")

LEARNED_FILE = "serve-learned.json"


@dataclass(frozen=True)
class Role:
    """This process's place among the server's workers."""

    index: int = 0                 # 0 is the leader
    workers: int = 1
    control_fd: int | None = None  # pipe to the supervisor (several workers only)

    @property
    def leader(self) -> bool:
        return self.index == 0

    @property
    def name(self) -> str:
        if self.workers == 1:
            return "single"
        return "leader" if self.leader else "follower"

    def tell_supervisor(self, message: str) -> None:
        """A line to the supervisor (``ready``, ``reload``); ignored without one."""
        if self.control_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.control_fd, f"{message} {self.index}\n".encode())


def learned_path(state_dir: Path) -> Path:
    return state_dir / LEARNED_FILE


def publish_learned(state_dir: Path, nodes: list[str]) -> None:
    """Tell the followers that ``nodes`` learned: their state on disk is newer."""
    atomic_write_json(learned_path(state_dir), {"at": time.time(), "nodes": sorted(nodes),
                                                "pid": os.getpid()})


class Refresher:
    """A follower's thread: reopens the nodes the leader published as learned, at most
    once per ``min_interval_s`` (each reopen reads their state from disk)."""

    def __init__(self, holder: "PipelineHolder", poll_s: float = 0.2,
                 min_interval_s: float = 5.0):
        self.holder = holder
        self.poll_s, self.min_interval_s = poll_s, min_interval_s
        self.refreshes = 0
        self.errors = 0
        self.last: dict[str, Any] | None = None
        self.last_error: str | None = None
        self._stamp: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ltrr-refresh", daemon=True)

    def start(self) -> None:
        self._stamp = self._mtime()        # the pipeline just opened reads what is there
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {"role": "follower", "refreshes": self.refreshes, "errors": self.errors,
                "last": self.last, "last_error": self.last_error}

    def _mtime(self) -> int | None:
        try:
            return learned_path(self.holder.current.plan.spec.state_dir).stat().st_mtime_ns
        except OSError:
            return None

    def _run(self) -> None:
        nodes: set[str] = set()
        last = 0.0
        while not self._stop.wait(self.poll_s):
            stamp = self._mtime()
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                try:
                    obj = json.loads(learned_path(
                        self.holder.current.plan.spec.state_dir).read_text())
                    nodes.update(obj.get("nodes", []))
                except (OSError, ValueError, AttributeError):
                    pass                    # a partial read cannot happen (atomic); retry
            if nodes and time.monotonic() - last >= self.min_interval_s:
                last = time.monotonic()
                self.refresh(sorted(nodes))
                nodes.clear()

    def refresh(self, nodes: list[str]) -> None:
        started = time.perf_counter()
        try:
            with self.holder.lease() as served:
                todo = [n for n in nodes if n in served.learners]
                served.pipeline.reopen(todo)
        except Exception as exc:          # keep serving what we have
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("reopening learned nodes %s failed", nodes)
            return
        self.refreshes += 1
        self.last_error = None
        self.last = {"at": time.time(), "nodes": todo,
                     "seconds": round(time.perf_counter() - started, 3)}
