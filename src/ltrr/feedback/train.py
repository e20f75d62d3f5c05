"""``ltrr train``: replay a logged history (decisions + feedback events) into the learners.

With the pipeline's own state folder (the default) this is :func:`catch_up` for
every learner: each learns from the event-log parts it has not seen. With another
folder (``--log DIR`` holding ``decisions/`` and ``events/``, e.g. collected by a
uniform logging policy elsewhere) the events are replayed part by part, oldest
first, joined to that folder's decisions; a per-learner cursor keyed by the folder
makes replaying the same log twice a no-op. With an attribution window, the decisions
that got no event within it are learned as reward 0 after the events
(:mod:`ltrr.feedback.silence`), and so are those of another folder's log.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import polars as pl

from ltrr.compiler import Plan
from ltrr.components import Component, Learner
from ltrr.errors import RunError
from ltrr.executors import Executor, LocalExecutor
from ltrr.feedback.cursor import Cursor, DamagedCursor, load, repaired
from ltrr.feedback.events import EventLog, learnable
from ltrr.feedback.events import quarantine_invalid as move_invalid
from ltrr.feedback.ingest import (catch_up, decision_log, decisions_for, event_log,
                                  paused_gc, pending_pieces)
from ltrr.feedback.interactions import entity_types, interactions, learn_from
from ltrr.feedback.learning_lock import describe, learning
from ltrr.feedback.silence import close_silent, late_event_ids, learns_silence, window_of
from ltrr.parquet_log import Piece, part_time_ns
from ltrr.runtime.decision_log import DecisionLog
from ltrr.runtime.workspace import Workspace
from ltrr.spec import DECISIONS_DIR, EVENTS_DIR
from ltrr.state import atomic_write_json

TRAIN_CURSOR = "train-cursor.json"
DAY_NS = 86_400 * 10**9
#: most appends of the log read and joined by one task of a replay
MOST_PIECES = 32


def _is_own(plan: Plan, log_dir: Path) -> bool:
    own = event_log(plan).directory.parent.resolve()
    return (log_dir.resolve() == own
            and decision_log(plan).directory.resolve() == (own / DECISIONS_DIR).resolve())


def _merge_stats(total: dict[str, Any], stats: dict[str, Any] | None) -> None:
    if not stats:
        return
    n_old, n_new = total.get("learned", 0), stats.get("learned", 0)
    for k, v in stats.items():
        if k == "mean_reward" and isinstance(v, (int, float)):
            m_old = total.get(k, 0.0)
            total[k] = (round((m_old * n_old + v * n_new) / (n_old + n_new), 4)
                        if n_old + n_new else v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and k in total \
                and isinstance(total[k], (int, float)):
            total[k] = round(total[k] + v, 3) if isinstance(v, float) else total[k] + v
        else:
            total[k] = v


@dataclass
class Prepared:
    """One append of a replayed log, read and joined to its decisions: what a learner
    learns from it, and the events left out as logged after their window closed."""

    name: str
    joined: pl.DataFrame
    decisions: pl.DataFrame
    late: int = 0


def prepare(plan: Plan, log_dir: Path, types: pl.DataFrame | None, silence: bool,
            pieces: list[Piece]) -> list[Prepared]:
    """Read and join ``pieces`` of ``log_dir``'s event log, in order. Depends on the log
    alone, never on what a learner learned: days can be prepared anywhere, in parallel."""
    events_log = EventLog(log_dir / EVENTS_DIR)
    dlog = DecisionLog(log_dir / DECISIONS_DIR)
    weights = plan.model.feedback.weights
    window = window_of(plan)
    out = []
    for piece in pieces:
        try:
            events = events_log.read_pieces([piece], logged_at=True)
        except FileNotFoundError:    # that folder's server compacted its log meanwhile
            moved = next((p for p in events_log.pieces() if p.name == piece.name), None)
            events = (events_log.read_pieces([moved], logged_at=True) if moved is not None
                      else events_log.read_pieces([], logged_at=True))  # quarantined since
        events = learnable(events, [piece], plan.model.feedback.max_future_s)
        ids = events["request_id"].drop_nulls().unique().to_list()
        decisions = decisions_for(plan, ids, dlog)
        joined = interactions(events, decisions, weights, types)
        late_n = 0
        if window is not None and silence:
            late = late_event_ids(events, decisions, window)
            if late.len():
                joined = joined.filter(~pl.col("event_id").is_in(late.implode()))
                late_n = late.len()
        out.append(Prepared(piece.name, joined, decisions, late_n))
    return out


def by_day(pieces: list[Piece], most: int | None = None) -> list[list[Piece]]:
    """``pieces`` (oldest first) cut where the UTC day of their append changes, and
    after ``most`` pieces (default :data:`MOST_PIECES`): a day a server appended to all
    day, or a log appended in one go, is still several tasks."""
    most = most or MOST_PIECES
    out: list[list[Piece]] = []
    last = None
    for piece in pieces:
        day = part_time_ns(piece.name) // DAY_NS
        if day != last or len(out[-1]) >= most:
            out.append([])
            last = day
        out[-1].append(piece)
    return out


def _day_name(pieces: list[Piece]) -> str:
    import datetime as dt

    t = part_time_ns(pieces[0].name) / 1e9
    return "day " + dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d")


def _replay(plan: Plan, learner: Component, log_dir: Path,
            progress: Callable[[int, int], None] | None,
            types: pl.DataFrame | None = None, executor: Executor | None = None
            ) -> dict[str, Any] | None:
    events_log = EventLog(log_dir / EVENTS_DIR)
    cursor_path = learner.ctx.learned_dir / TRAIN_CURSOR
    key = str(log_dir.resolve())
    pieces = events_log.pieces()
    names = [p.name for p in pieces]
    try:
        cursors = load(cursor_path) or {}
        if not isinstance(cursors, dict):
            raise DamagedCursor(cursor_path, "not an object of log folder → cursor")
        old = cursors.get(key)          # the old form: a list of part names
        cursor = (Cursor() if old is None else Cursor(parts=frozenset(old))
                  if isinstance(old, list) else Cursor.from_json(old))
    except (DamagedCursor, ValueError) as exc:
        reason = exc.reason if isinstance(exc, DamagedCursor) else f"{key}: {exc}"
        cursor = repaired(cursor_path, reason, lambda: names)
        cursors = {key: cursor.to_json()}
        atomic_write_json(cursor_path, cursors)
    pending = pending_pieces(events_log, cursor, pieces=pieces)
    if not pending:
        return None
    total: dict[str, Any] = {"parts": 0}
    executor = executor or LocalExecutor()
    # days are read and joined on the executor, a window of them at a time (memory
    # stays bounded), and learned here in log order: what is learned is the same
    days = by_day(pending)
    step = 1 if executor.kind == "local" else 2 * executor.workers
    task = functools.partial(prepare, plan, log_dir, types, learns_silence(learner))
    n = 0
    for lo in range(0, len(days), step):
        window = days[lo:lo + step]
        for day in executor.map(task, window, names=[_day_name(d) for d in window]):
            for piece in day:
                if piece.late:
                    total["late_events"] = total.get("late_events", 0) + piece.late
                with paused_gc():
                    _merge_stats(total, learn_from(learner, piece.joined, piece.decisions))
                total["parts"] += 1
                cursor = cursor.advanced([piece.name], names)
                cursors[key] = cursor.to_json()
                atomic_write_json(cursor_path, cursors)
                n += 1
                if progress:
                    progress(n, len(pending))
    return total


def train(plan: Plan, log_dir: Path | None = None, *, nodes: list[str] | None = None,
          workspace: Workspace | None = None,
          progress: Callable[[str, int, int], None] | None = None,
          quarantine_invalid: bool = False, executor: Executor | None = None
          ) -> dict[str, Any]:
    """Replay the log in ``log_dir`` (default: the pipeline's own) into its learners.

    Returns ``{"log": dir, "learners": {node id: stats or None (nothing new)}}``.
    ``quarantine_invalid`` first moves logged events with invalid timestamps out of the
    log (``events.quarantine_invalid``; ``"quarantined"``: part → events moved).
    ``executor`` reads and joins another folder's log day by day in parallel (the
    learners still learn the days in order); the pipeline's own log is caught up here.
    """
    log_dir = Path(log_dir) if log_dir is not None else event_log(plan).directory.parent
    learners = [n.id for n in plan.nodes if issubclass(n.registration.cls, Learner)]
    if nodes:
        unknown = [n for n in nodes if n not in learners]
        if unknown:
            raise RunError(f"'{unknown[0]}' is not a learning node of this pipeline",
                           field="--node", hint="learners: " + (", ".join(learners) or "none"))
        learners = [n for n in learners if n in nodes]
    own = _is_own(plan, log_dir)
    if not own and not (log_dir / EVENTS_DIR).is_dir():
        raise RunError(f"{log_dir} holds no event log (no events/ folder)", field="--log",
                       hint="point --log at a pipeline state folder with decisions/ and "
                            "events/ (e.g. .ltrr/<name>)")
    if not own and not (log_dir / DECISIONS_DIR).is_dir():
        raise RunError(f"{log_dir} holds no decision log (no decisions/ folder)", field="--log",
                       hint="events can only teach a policy together with the decisions "
                            "they answer")
    report: dict[str, Any] = {"log": str(log_dir), "learners": {}}
    with learning(plan.spec.state_dir, "train") as server:
        if server is not None:
            raise RunError(
                f"{describe(server)} is serving this pipeline and learns into "
                f"{plan.spec.state_dir}; a second learner would overwrite what it learns",
                hint="the server learns every logged event itself (`ltrr feedback` hands "
                     "events to it); stop the server to replay another --log")
        if quarantine_invalid:
            report["quarantined"] = move_invalid(EventLog(log_dir / EVENTS_DIR),
                                                 plan.model.feedback.max_future_s)
        _train(plan, log_dir, learners, own, workspace, progress, report, executor)
    return report


def _train(plan: Plan, log_dir: Path, learners: list[str], own: bool,
           workspace: Workspace | None, progress: Callable[[str, int, int], None] | None,
           report: dict[str, Any], executor: Executor | None = None) -> None:
    mine = workspace is None
    workspace = workspace or Workspace(plan)
    types = None if own else entity_types(plan, workspace.catalog)   # read once
    try:
        for node_id in learners:
            learner = workspace.opened(node_id)
            if own:
                report["learners"][node_id] = catch_up(plan, learner)
            else:
                cb = (lambda d, t, _n=node_id: progress(_n, d, t)) if progress else None
                stats = _replay(plan, learner, log_dir, cb, types, executor)
                with paused_gc():
                    silence = close_silent(plan, learner, log_dir=log_dir)
                if silence is not None:
                    stats = {**(stats or {}), "silence": silence}
                report["learners"][node_id] = stats
            # learners that train in batches (the learned rankers) fit what is pending
            finish = getattr(learner, "train_pending", None)
            if callable(finish):
                done = finish()
                if done is not None:
                    report["learners"][node_id] = {**(report["learners"][node_id] or {}),
                                                   "training": done}
    finally:
        if mine:
            workspace.close()
