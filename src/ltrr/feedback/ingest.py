"""``ltrr feedback``: log new events durably, then let every learner catch up on them.

Each learner keeps a cursor (the event-log parts it has learned from) next to its
learned state. Learning happens after the events are safely logged, and a
learner's cursor advances only after its ``learn`` returned, so a learner that
failed or was interrupted catches up on the next ingestion (at-least-once), and
a learner added to a pipeline later learns from the whole history. Learners with
the same pending parts share one read and join; one with nothing pending is not
even opened. docs/feedback.md has the guarantees and the measured throughput.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from ltrr.compiler import Plan
from ltrr.components import Component, Learner
from ltrr.feedback.cursor import Cursor, read_cursor, write_cursor
from ltrr.feedback.events import EventLog, learnable, read_events
from ltrr.feedback.interactions import entity_types, interactions, learn_from
from ltrr.feedback.learning_lock import learning
from ltrr.feedback.silence import close_silent, late_event_ids, learns_silence, window_of
from ltrr.parquet_log import Piece, part_time_ns
from ltrr.runtime.decision_log import DecisionLog
from ltrr.runtime.workspace import Workspace

CURSOR = "cursor.json"
DECISION_CHUNK = 64      # decision-log parts read at a time by decisions_for


def event_log(plan: Plan) -> EventLog:
    """The pipeline's feedback event log."""
    return EventLog(plan.spec.events_dir)


def decision_log(plan: Plan) -> DecisionLog:
    """The pipeline's decision log."""
    return DecisionLog(plan.spec.decisions_dir)


def decisions_for(plan: Plan, request_ids: list[str], log: DecisionLog | None = None
                  ) -> pl.DataFrame:
    """The decisions with these request ids, from ``log`` (default: the plan's own),
    read lazily: only what is needed."""
    log = log or decision_log(plan)
    parts = log.parts()
    if not parts or not request_ids:
        return log.schema.to_frame()
    # Feedback mostly answers recent decisions: read the newest parts first, a chunk at a
    # time, and stop once every id is found, so catching up does not slow down as the log
    # grows. A request id logged twice (a client reusing ids) keeps its latest decision.
    wanted = set(request_ids)
    found: list[pl.DataFrame] = []
    for end in range(len(parts), 0, -DECISION_CHUNK):
        chunk = parts[max(0, end - DECISION_CHUNK):end]
        ids = pl.Series(sorted(wanted)).implode()
        got = log.scan(chunk, lambda ps: pl.scan_parquet(ps).filter(
            pl.col("request_id").is_in(ids)).collect() if ps else log.schema.to_frame())
        if got.height:
            got = got.unique("request_id", keep="last", maintain_order=True)
            found.append(got)
            wanted -= set(got["request_id"].to_list())
        if not wanted:
            break
    if not found:
        return log.schema.to_frame()
    return pl.concat(found, how="vertical_relaxed")


def cursor_of(learned_dir: Path, log: EventLog, *, repair: bool = True) -> Cursor:
    """A learner's cursor (``cursor.py``; a damaged one is rebuilt when ``repair``)."""
    return read_cursor(learned_dir / CURSOR, lambda: [p.name for p in log.pieces()],
                       repair=repair)


def pending_pieces(log: EventLog, cursor: Cursor, until_ns: int | None = None,
                   pieces: list[Piece] | None = None) -> list[Piece]:
    """The appends ``cursor`` has not learned (written by ``until_ns``), oldest first."""
    return [p for p in (log.pieces() if pieces is None else pieces)
            if not cursor.learned(p.name)
            and (until_ns is None or part_time_ns(p.name) <= until_ns)]


class Joined:
    """Interactions of sets of event-log parts, each set read and joined to its
    decisions once: learners with the same pending parts (the usual case: every
    learner was up to date before this ingestion) share one join."""

    def __init__(self, plan: Plan, catalog=None):
        self.plan = plan
        self.catalog = catalog          # the plan's, when a workspace already loaded it
        self.seconds = 0.0
        self._done: dict[tuple[str, ...], tuple[pl.DataFrame, pl.DataFrame, pl.Series]] = {}
        self._types: pl.DataFrame | None | bool = False     # False: not read yet

    def of(self, pieces: list[Piece]) -> tuple[pl.DataFrame, pl.DataFrame]:
        """``(interactions, decisions)`` of the events in ``pieces``."""
        return self._of(pieces)[:2]

    def late(self, pieces: list[Piece]) -> pl.Series:
        """Ids of the events in ``pieces`` logged after their decision's attribution
        window closed (empty without a window)."""
        return self._of(pieces)[2]

    def _of(self, pieces: list[Piece]) -> tuple[pl.DataFrame, pl.DataFrame, pl.Series]:
        key = tuple((p.name, p.path.name) for p in pieces)
        if key not in self._done:
            started = time.perf_counter()
            events = learnable(event_log(self.plan).read_pieces(pieces, logged_at=True),
                               pieces, self.plan.model.feedback.max_future_s)
            ids = events["request_id"].drop_nulls().unique().to_list()
            decisions = decisions_for(self.plan, ids)
            if self._types is False:
                self._types = entity_types(self.plan, self.catalog)
            joined = interactions(events, decisions, self.plan.model.feedback.weights,
                                  self._types)  # type: ignore[arg-type]
            window = window_of(self.plan)
            late = (late_event_ids(events, decisions, window) if window is not None
                    else pl.Series("event_id", [], dtype=pl.String))
            self._done = {key: (joined, decisions, late)}   # keep one: frames can be large
            self.seconds += time.perf_counter() - started
        return self._done[key]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside (nesting-safe).

    Learning allocates many small objects while the learners' opened state (catalog
    ids, memory tables, models) makes each full collection scan a large heap (a vw
    policy learning 95,000 events: 0.70 s with collection, 0.47 s without). Reference
    counting still frees what is dropped; cycles wait until after.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _pending(plan: Plan, learned_dir: Path, until_ns: int | None = None
             ) -> tuple[Cursor, list[Piece], list[Piece]]:
    """A learner's cursor, its pending appends and all of the log's."""
    log = event_log(plan)
    pieces = log.pieces()
    cursor = cursor_of(learned_dir, log)
    return cursor, pending_pieces(log, cursor, until_ns, pieces), pieces


def catch_up(plan: Plan, learner: Component, joined: Joined | None = None,
             until_ns: int | None = None, now: float | None = None) -> dict[str, Any] | None:
    """Feed ``learner`` every logged event it has not learned from yet, then — with an
    attribution window, for a learner of silence — the decisions whose window closed by
    ``now`` (default: the clock) without an event (:mod:`ltrr.feedback.silence`).

    ``joined`` shares the reading and joining of the same parts between learners.
    ``until_ns`` leaves the parts written after that time for a later call (a server
    with several workers lets their decision logs settle first).
    """
    cursor, pending, pieces = _pending(plan, learner.ctx.learned_dir, until_ns)
    stats = None
    if pending:
        joined = joined or Joined(plan, learner.ctx.whole_catalog)
        frame, decisions = joined.of(pending)
        late = joined.late(pending) if learns_silence(learner) else None
        if late is not None and late.len():
            frame = frame.filter(~pl.col("event_id").is_in(late.implode()))
        with paused_gc():
            stats = learn_from(learner, frame, decisions)
        if late is not None and late.len():
            stats = {**(stats or {}), "late_events": late.len()}
        # a part quarantined while reading counts as learned: its rows are gone from the log
        write_cursor(learner.ctx.learned_dir / CURSOR,
                     cursor.advanced({p.name for p in pending}, [p.name for p in pieces]))
    with paused_gc():
        silence = close_silent(plan, learner, now=now)
    if silence is not None:
        stats = {**(stats or {}), "silence": silence}
    return stats


def ingest(plan: Plan, events: pl.DataFrame, workspace: Workspace | None = None,
           *, role: str = "feedback", now: float | None = None) -> dict[str, Any]:
    """Append ``events`` not seen before, then bring every learner up to date — unless
    a server learns this state folder (see ``learning_lock``): then only append.
    ``now`` is the time attribution windows close by (default: the clock; a simulator
    whose users have all answered passes a later one).

    The report: ``received``, ``new``, ``learners`` (node id → its ``learn`` stats, for
    those that learned something), ``learned_by`` (the server that learns the events
    instead, or None) and ``seconds`` per stage (``append``, ``open``, ``join``,
    ``learn``: node id → seconds).
    """
    started = time.perf_counter()
    new = event_log(plan).append_new(events)
    seconds: dict[str, Any] = {"append": _since(started), "open": 0.0, "learn": {}}
    report: dict[str, Any] = {"received": events.height, "new": new.height, "learners": {},
                              "learned_by": None, "seconds": seconds}
    with learning(plan.spec.state_dir, role) as server:
        if server is not None:
            report["learned_by"] = server
            return report
        _learn_all(plan, workspace, report, now)
    return report


def _learn_all(plan: Plan, workspace: Workspace | None, report: dict[str, Any],
               now: float | None = None) -> None:
    seconds = report["seconds"]
    own = workspace is None
    workspace = workspace or Workspace(plan)
    joined = Joined(plan, workspace.catalog)
    try:
        with paused_gc():
            for node in plan.nodes:
                if not issubclass(node.registration.cls, Learner):
                    continue
                silence = (window_of(plan) is not None
                           and learns_silence(node.registration.cls))
                if own and not silence and not _pending(
                        plan, workspace.instantiate(node).ctx.learned_dir)[1]:
                    continue                # up to date: not even opened
                t = time.perf_counter()
                learner = workspace.opened(node.id)
                seconds["open"] += _since(t)
                t, join_before = time.perf_counter(), joined.seconds
                stats = catch_up(plan, learner, joined, now=now)
                seconds["learn"][node.id] = round(_since(t) - (joined.seconds - join_before), 3)
                if stats is not None:
                    report["learners"][node.id] = stats
    finally:
        if own:
            workspace.close()
    seconds["open"] = round(seconds["open"], 3)
    seconds["join"] = round(joined.seconds, 3)
    report["compacted"] = compact_logs(plan)


def compact_logs(plan: Plan) -> dict[str, Any]:
    """Merge the small parts of the event and decision logs once there are too many
    (``ParquetLog.compact``). The learning process calls it after learning, so it never
    removes a part its own learners are reading. Returns what was compacted, by log."""
    import logging

    done = {}
    for name, log in (("events", event_log(plan)), ("decisions", decision_log(plan))):
        if not log.directory.is_dir():
            continue
        try:
            out = log.compact()
        except OSError:           # a full disk, say: the log stays as it was, still valid
            logging.getLogger("ltrr").exception("compacting %s failed", log.directory)
            continue
        if out:
            done[name] = out
    return done


def _since(t: float) -> float:
    return round(time.perf_counter() - t, 3)


def ingest_file(plan: Plan, path: Path) -> dict[str, Any]:
    """Read, validate and ingest an events file (JSONL or Parquet)."""
    started = time.perf_counter()
    events = read_events(path, plan.model.feedback.weights,
                         max_future_s=plan.model.feedback.max_future_s)
    read = _since(started)
    report = ingest(plan, events)
    report["seconds"] = {"read": read, **report["seconds"]}
    return report
