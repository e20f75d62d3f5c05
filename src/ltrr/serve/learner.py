"""The background learner of a server.

A single thread, :class:`BackgroundLearner`, lets every learner of the live pipeline
catch up (``ltrr.feedback.ingest.catch_up``) on the events logged since its cursor: once
at start (events acknowledged before a crash but not learned), then shortly after each
append. It never blocks /search: the learners update their state under their own locks
while the batch worker keeps answering. It compacts the logs, and reports problems
(damaged parts, repaired cursors, learning held elsewhere) to /health.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ltrr.serve.decisions import DecisionWriter
    from ltrr.serve.holder import PipelineHolder, Served
    from ltrr.serve.metrics import Metrics
    from ltrr.state import OwnerLock

log = logging.getLogger("ltrr.serve")

LEARNER_NICE = 10     # the learning thread's CPU priority, below the serving threads
DISCOVER_S = 1.0      # how often a lone server looks for parts other processes logged
PROBLEMS_TTL_S = 5.0  # /health looks at the state folder's files at most this often


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: threads have their own nice
    value, inherited by the threads they start, such as LightGBM's training threads), so
    a retraining takes the cores only when searches leave them idle."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LEARNER_NICE)
    except (OSError, AttributeError):
        pass                  # elsewhere the whole process would be lowered: leave it


class BackgroundLearner:
    """The background learning thread: catch every learner up on the event log."""

    def __init__(self, holder: "PipelineHolder", metrics: "Metrics",
                 decisions: "DecisionWriter", interval_ms: float, *, enabled: bool = True,
                 poll_s: float | None = None, settle_s: float = 0.0,
                 on_learned: Callable[[list[str]], None] | None = None):
        """``enabled`` False: a follower's learner, which never runs. With several
        workers the leader also looks for parts the others logged every ``poll_s``,
        learns a part only once it is ``settle_s`` old (the decisions it answers,
        logged by another worker, are on disk by then) and reports the nodes that
        learned to ``on_learned``. A lone server looks every ``DISCOVER_S`` for the parts
        ``ltrr feedback`` logged and left to it.

        The learner holds the state folder's learner lock (``feedback.learning_lock``)
        from its start to its stop: no other process learns into it meanwhile."""
        self.holder, self.metrics, self.decisions = holder, metrics, decisions
        self.interval = interval_ms / 1000.0
        self.enabled, self.settle_s = enabled, settle_s
        self.poll_s = poll_s if poll_s is not None else DISCOVER_S
        self.on_learned = on_learned
        self.runs = 0
        self.errors = 0
        self.last: dict[str, Any] = {}
        self.last_error: str | None = None
        self.held_by: dict[str, Any] | None = None   # who learns instead (lock refused)
        self._problems: tuple[tuple[int, int], float, list[str]] | None = None
        self._learning = False
        self._owner: "OwnerLock | None" = None
        self._opened_ns: dict[int, int] = {}     # generation → when it read learned state
        self._unlearned: dict[str, int] = {}     # event-log part → events, not learned yet
        self._known: set[str] = set()            # every part seen (polling workers)
        self._window: float | None = None        # the spec's attribution window
        self._last_run = time.monotonic()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ltrr-learner", daemon=True)

    @property
    def pending(self) -> int:
        """Events logged but not learned by every learner yet."""
        with self._lock:
            return sum(self._unlearned.values())

    def start(self) -> None:
        if not self.enabled:
            return
        with self.holder.lease() as served:
            # the pipeline read its learned state at most this long ago
            self._opened_ns[served.generation] = time.time_ns() - int(
                (served.open_seconds + 1.0) * 1e9)
            try:
                self._own(served)
            except Exception:            # the learning thread tries again
                log.exception("reading the learners' state again failed")
        self._backlog()
        self._wake.set()            # catch up once at start
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Let a running catch-up finish, then end the thread (no new run starts)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._owner is not None and not self._thread.is_alive():
            self._owner.release()

    def _own(self, served: "Served") -> bool:
        """Whether this process may learn ``served``'s state: it holds the learner lock,
        or takes it now. Taken after another process learned since this pipeline read
        its state from disk, the learners are read again first."""
        from ltrr.feedback.learning_lock import SERVER_ROLE, learner_lock

        lock = learner_lock(served.plan.spec.state_dir)
        if self._owner is None or self._owner.path != lock.path:
            if self._owner is not None:
                self._owner.release()
            self._owner = lock
        if self._owner.held:
            return True
        if not self._owner.try_acquire(SERVER_ROLE, f"ltrr serve {served.plan.spec.path}"):
            self.held_by = self._owner.holder() or {"pid": "?"}
            return False
        self.held_by = None
        try:
            if self._learned_elsewhere(served):
                log.warning("another process learned into %s: reading the learners' state "
                            "again", served.plan.spec.state_dir)
                served.pipeline.reopen(served.learners)
        except BaseException:
            self._owner.release()       # never learn on top of stale state: retry later
            raise
        return True

    def _learned_elsewhere(self, served: "Served") -> bool:
        """Whether a learner's cursor was written after the pipeline read its state."""
        from ltrr.feedback.ingest import CURSOR

        since = self._opened_ns.get(served.generation)
        for node in served.learners:
            cursor = served.pipeline.workspace.opened(node).ctx.learned_dir / CURSOR
            try:
                stamp = cursor.stat().st_mtime_ns
            except FileNotFoundError:
                continue
            if since is None or stamp > since:
                return True
        return False

    def wake(self) -> None:
        self._wake.set()

    def _compact(self, served: "Served") -> None:
        """Merge small log parts once there are too many (after learning, by the one
        process that learns: never under its own readers)."""
        from ltrr.feedback.ingest import compact_logs, event_log
        from ltrr.parquet_log import is_compacted

        try:
            if not compact_logs(served.plan):
                return
            merged = [p.name for p in event_log(served.plan).parts() if is_compacted(p)]
        except Exception:
            log.exception("compacting the logs failed")
            return
        with self._lock:
            self._known.update(merged)      # not new events: already counted

    def problems(self) -> list[str]:
        """Why the server is degraded (``/health``): log parts quarantined as damaged,
        learners' cursors moved aside as damaged, another process holding the learning.

        The files are looked at on every call while a learning run is going on (which is
        what quarantines parts and repairs cursors), once after it and after a reload, and
        otherwise at most every ``PROBLEMS_TTL_S`` (an operator clearing a problem, another
        worker's learner): ``/health`` is polled, and its answer must not cost a scan of
        the state folder."""
        key = (self.runs, self.holder.generation)
        now = time.monotonic()
        cached = self._problems
        if self._learning or cached is None or cached[0] != key \
                or now - cached[1] >= PROBLEMS_TTL_S:
            cached = self._problems = (key, now, self._scan_problems())
        out = list(cached[2])
        if self.enabled and self.held_by is not None:
            from ltrr.feedback.learning_lock import describe

            out.append(f"not learning: {describe(self.held_by)} holds the learned state")
        return out

    def _scan_problems(self) -> list[str]:
        from ltrr.feedback.cursor import damaged_cursors
        from ltrr.feedback.events import skipped_invalid
        from ltrr.feedback.ingest import decision_log, event_log

        out = []
        with self.holder.lease() as served:
            for what, plog in (("event log", event_log(served.plan)),
                               ("decision log", decision_log(served.plan))):
                out += [f"{what} part {q['part']} was damaged and is quarantined ({q['reason']}); "
                        "its rows are not read: inspect it, then delete it to clear this"
                        for q in plog.quarantined()]
            skipped = skipped_invalid(event_log(served.plan).directory)
            if skipped:
                out.append(f"event log parts hold {sum(skipped.values())} events with invalid "
                           f"timestamps, skipped by learning: {', '.join(sorted(skipped))}; "
                           "stop the server and run `ltrr train SPEC --quarantine-invalid` "
                           "to move them out")
            for node in served.learners:
                learned = served.pipeline.workspace.opened(node).ctx.learned_dir
                out += [f"learner '{node}': its damaged cursor was moved to {path} and rebuilt "
                        "(see the log); delete that file to clear this"
                        for path in damaged_cursors(learned)]
        return out

    def logged(self, part: str, events: int) -> None:
        with self._lock:
            if part in self._known:      # found on disk first, maybe learned already
                return
            self._known.add(part)
            self._unlearned[part] = events
        self.metrics.learner_lag.set(self.pending)

    def _backlog(self) -> None:
        """Parts some learner has not learned from yet (left by a crash or a stop)."""
        import polars as pl

        with self.holder.lease() as served:
            listed, pending = self._on_disk(served)
        self._known.update(listed)
        for name, piece in pending.items():
            rows = piece.rows
            if rows is None:
                try:
                    rows = pl.scan_parquet(piece.path).select(pl.len()).collect().item()
                except Exception:
                    rows = 0
            self._unlearned[name] = self._unlearned.get(name, 0) + rows
        self.metrics.learner_lag.set(self.pending)

    @staticmethod
    def _on_disk(served: "Served") -> tuple[set[str], dict[str, Any]]:
        """The event log's part files now, and those some learner has not fully learned
        (file name → a piece of it)."""
        from ltrr.feedback.ingest import cursor_of, event_log, pending_pieces

        elog = event_log(served.plan)
        pieces = elog.pieces()
        pending: dict[str, Any] = {}
        for node in served.learners if pieces else []:
            learned = served.pipeline.workspace.opened(node).ctx.learned_dir
            cursor = cursor_of(learned, elog, repair=False)   # repaired when learning
            pending.update((p.path.name, p) for p in pending_pieces(elog, cursor,
                                                                    pieces=pieces))
        return {p.path.name for p in pieces}, pending

    def _settle_unlearned(self, served: "Served") -> None:
        """After a run: forget the counted parts every learner has learned, or that are
        gone (compacted, quarantined). Only parts counted before the log is listed are
        judged: a part logged meanwhile is on disk but may be missing from the listing."""
        with self._lock:
            counted = set(self._unlearned)
        listed, pending = self._on_disk(served)
        with self._lock:
            for part in counted:
                if part not in listed or part not in pending:
                    self._unlearned.pop(part, None)
            # learned: a late `logged` call must not count them (unlearned ones it counts)
            self._known.update(listed - pending.keys())

    def _run(self) -> None:
        _lower_priority()
        wait = self.interval
        while not self._stop.is_set():
            woken = self._wake.wait(self.poll_s)
            if self._stop.is_set():
                return
            self._discover()
            # woken (start, own appends, reload) a lone server runs at once; with several
            # workers a run waits until some part settled
            if not (woken and not self.settle_s) and not self._due():
                self._wake.clear()
                continue
            if self._stop.is_set():
                return
            # gather more events before learning; at most 1/5 of the time is learning
            if self._stop.wait(wait):
                return
            self._wake.clear()
            seconds = self.run_once()
            failed = self.last_error is not None
            wait = max(self.interval, 4 * seconds) if not failed else min(30.0, max(1.0, 2 * wait))
            if failed:
                self._wake.set()      # retry after the back-off

    def _discover(self) -> None:
        """Count the parts other workers logged since the last look as unlearned."""
        import polars as pl

        from ltrr.feedback.ingest import event_log

        with self.holder.lease() as served:
            parts = event_log(served.plan).parts()
            self._window = served.plan.model.feedback.attribution_window
        with self._lock:
            self._known.intersection_update(p.name for p in parts)     # compacted away
            new = [p for p in parts if p.name not in self._known]
        for p in new:
            try:
                rows = pl.scan_parquet(p).select(pl.len()).collect().item()
            except Exception:
                rows = 0
            with self._lock:
                self._known.add(p.name)
                self._unlearned.setdefault(p.name, rows)
        if new:
            self.metrics.learner_lag.set(self.pending)

    def _due(self) -> bool:
        """Whether some unlearned part is old enough to learn from, or — with an
        attribution window — silent decisions may have closed since the last run
        (looked at every tenth of the window, at least every minute)."""
        from ltrr.parquet_log import part_time_ns

        if self._window is not None and time.monotonic() - self._last_run >= max(
                self.interval, min(self._window / 10.0, 60.0)):
            return True
        bound = time.time_ns() - int(self.settle_s * 1e9)
        with self._lock:
            return any(part_time_ns(p) <= bound for p in self._unlearned)

    def run_once(self) -> float:
        """One catch-up of every learner; returns its duration in seconds."""
        self._learning = True      # what it quarantines or repairs shows in /health at once
        try:
            return self._catch_up()
        finally:
            self._learning = False
            self._last_run = time.monotonic()

    def _catch_up(self) -> float:
        from ltrr.feedback.ingest import Joined, catch_up

        started = time.perf_counter()
        until = time.time_ns() - int(self.settle_s * 1e9) if self.settle_s else None
        stats: dict[str, Any] = {}
        errors: list[str] = []
        with self.holder.learn_lock, self.holder.lease() as served:
            try:
                owner = self._own(served)
            except Exception as exc:
                log.exception("reading the learners' state again failed")
                errors.append(f"reopening the learners: {type(exc).__name__}: {exc}")
                owner = False
            if not owner and not errors:   # another process learns (a command): later
                return time.perf_counter() - started
            try:
                self.decisions.flush()      # the decisions the events answer are on disk
            except Exception as exc:
                errors.append(f"decision log: {exc}")
            # learners with the same parts share one join
            joined = Joined(served.plan, served.pipeline.catalog)
            for node in served.learners if not errors else []:
                try:
                    out = catch_up(served.plan, served.pipeline.workspace.opened(node),
                                   joined, until_ns=until)
                except Exception as exc:   # learning must never take the server down
                    log.exception("learner '%s' failed to catch up", node)
                    errors.append(f"{node}: {type(exc).__name__}: {exc}")
                    continue
                if out is not None:
                    stats[node] = out
            if owner and not errors:
                self._compact(served)
            if owner:
                try:
                    self._settle_unlearned(served)
                except Exception:
                    log.exception("counting the unlearned events failed")
        seconds = time.perf_counter() - started
        self.runs += 1
        self.metrics.learner_seconds.observe(seconds)
        if errors:
            self.errors += 1
            self.last_error = "; ".join(errors)
            self.metrics.learner_runs.labels("error").inc()
        else:
            self.last_error = None
            self.metrics.learner_runs.labels("ok").inc()
        self.last = {"at": time.time(), "seconds": round(seconds, 3), "learners": stats}
        self.metrics.learner_lag.set(self.pending)
        if stats and self.on_learned is not None:
            try:
                self.on_learned(sorted(stats))
            except Exception:
                log.exception("publishing the learned state failed")
        return seconds
