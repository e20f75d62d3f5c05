"""Learning from silence: the spec's ``feedback.attribution_window``.

With a window set, a policy learns every decision it logged, not only those that got
events: a decision with no event logged within the window after it is learned as reward
0 (minus its costs) once the window has closed — a search that found nothing the user
wanted teaches as much as one that did. An event logged after its decision's window
closed is not that decision's reward (the decision was learned already); learners that
learn silence drop it and count it as ``late_events``.

Time is the logs' own clock: a decision's ``timestamp`` (when it was logged) and the
write time of the event-log append that carried an event, never an event's claimed
``timestamp`` (clients' clocks differ; replayed files carry old times).

Learners opt in with ``learns_silence = True`` (the bandit policies). Each keeps, next to
its cursor, ``silence.json``: per decision log, the time up to which its decisions are
closed, so each silent decision is learned once.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ltrr.feedback.events import EventLog
from ltrr.feedback.schema import EVENT_SCHEMA
from ltrr.parquet_log import part_time_ns
from ltrr.runtime.decision_log import DecisionLog
from ltrr.state import atomic_write_json

if TYPE_CHECKING:
    from ltrr.compiler import Plan

WATERMARK = "silence.json"
#: The type of the row standing for a decision's silence (never logged as an event).
SILENCE = "(silence)"
log = logging.getLogger("ltrr")


def learns_silence(learner_or_class: Any) -> bool:
    """Whether a learner (or its class) learns silent decisions."""
    return bool(getattr(learner_or_class, "learns_silence", False))


def window_of(plan: "Plan") -> float | None:
    """The spec's attribution window in seconds (None: silence is not learned)."""
    return plan.model.feedback.attribution_window


def late_event_ids(events: pl.DataFrame, decisions: pl.DataFrame, window: float) -> pl.Series:
    """Ids of ``events`` (with ``logged_at``) logged after their decision's window closed."""
    if "logged_at" not in events.columns or events.height == 0 or decisions.height == 0:
        return pl.Series("event_id", [], dtype=pl.String)
    dts = decisions.select("request_id", pl.col("timestamp").alias("_decided"))
    return (events.select("event_id", "request_id", "logged_at")
            .join(dts, on="request_id", how="inner")
            .filter(pl.col("logged_at") > pl.col("_decided") + window)["event_id"])


# --- the watermark ---------------------------------------------------------------------

def _key(decisions_dir: Path) -> str:
    return str(Path(decisions_dir).resolve())


def read_watermark(learned_dir: Path, decisions_dir: Path, window: float) -> float:
    """Time up to which the decisions in ``decisions_dir`` are closed for this learner
    (0: none yet). A damaged file is moved aside and the past counted as closed (now −
    window): silent decisions are then skipped rather than learned twice."""
    path = Path(learned_dir) / WATERMARK
    if not path.exists():
        return 0.0
    try:
        marks = json.loads(path.read_text())
        value = marks.get(_key(decisions_dir), 0.0) if isinstance(marks, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise ValueError(f"expected {{decision log folder: closed-until seconds}}, "
                             f"got {str(marks)[:80]}")
        return float(value)
    except ValueError as exc:
        aside = path.with_name(f"{path.name}.damaged-{int(time.time())}")
        path.replace(aside)
        log.warning("%s was unreadable (%s), moved to %s: decisions logged before now "
                    "count as closed (their silence is not learned)", path, exc, aside.name)
        mark = time.time() - window
        write_watermark(learned_dir, decisions_dir, mark)
        return mark


def write_watermark(learned_dir: Path, decisions_dir: Path, until: float) -> None:
    path = Path(learned_dir) / WATERMARK
    try:
        marks = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        marks = {}
    if not isinstance(marks, dict):
        marks = {}
    marks[_key(decisions_dir)] = until
    atomic_write_json(path, marks)


# --- closing ---------------------------------------------------------------------------

def closing(dlog: DecisionLog, since: float, until: float) -> pl.DataFrame:
    """Policy decisions logged in ``(since, until]``."""
    parts = [p for p in dlog.parts() if part_time_ns(p) / 1e9 > since]
    if not parts:
        return dlog.schema.to_frame()
    ts = pl.col("timestamp")
    return dlog.scan(parts, lambda ps: pl.scan_parquet(ps).filter(
        (ts > since) & (ts <= until) & pl.col("allocation").is_not_null()).collect()
        if ps else dlog.schema.to_frame())


def silent_decisions(decisions: pl.DataFrame, elog: EventLog, window: float) -> pl.DataFrame:
    """The ``decisions`` that got no event logged within ``window`` after them."""
    if decisions.height == 0:
        return decisions
    first = float(decisions["timestamp"].min())
    # an event answering a decision is logged after it: older appends cannot hold one
    pieces = [p for p in elog.pieces() if part_time_ns(p.name) / 1e9 >= first - 1.0]
    if pieces:
        ids = decisions["request_id"].implode()
        events = elog.read_pieces(pieces, logged_at=True).filter(
            pl.col("request_id").is_in(ids))
        answered = (events.join(decisions.select("request_id", pl.col("timestamp")
                                                 .alias("_decided")), on="request_id")
                    .filter(pl.col("logged_at") <= pl.col("_decided") + window)
                    ["request_id"].unique())
        decisions = decisions.filter(~pl.col("request_id").is_in(answered.implode()))
    return decisions


def silence_events(decisions: pl.DataFrame) -> pl.DataFrame:
    """One row per silent decision, shaped as an event (no entity, no weight), so the
    decision's reward is 0 minus its costs through the usual join."""
    n = decisions.height
    return pl.DataFrame({
        "event_id": [f"silence:{r}" for r in decisions["request_id"]],
        "request_id": decisions["request_id"], "user_id": [None] * n,
        "entity_id": [None] * n, "type": [SILENCE] * n, "position": [None] * n,
        "timestamp": decisions["timestamp"], "query": [None] * n,
    }, schema=EVENT_SCHEMA)


def close_silent(plan: "Plan", learner: Any, *, now: float | None = None,
                 log_dir: Path | None = None) -> dict[str, Any] | None:
    """Learn, as reward 0, the decisions of ``log_dir`` (default: the pipeline's own
    logs) whose window closed by ``now`` (default: the clock) without an event.

    None when the spec sets no window, the learner does not learn silence, or nothing
    closed since the last call; else ``{"closed": decisions, "silent": learned as 0,
    **the learner's stats}``.
    """
    from ltrr.feedback.interactions import interactions, learn_from
    from ltrr.spec import DECISIONS_DIR, EVENTS_DIR

    window = window_of(plan)
    if window is None or not learns_silence(learner):
        return None
    if log_dir is None:
        dlog, elog = DecisionLog(plan.spec.decisions_dir), EventLog(plan.spec.events_dir)
    else:
        dlog, elog = (DecisionLog(Path(log_dir) / DECISIONS_DIR),
                      EventLog(Path(log_dir) / EVENTS_DIR))
    until = (time.time() if now is None else now) - window
    learned_dir = learner.ctx.learned_dir
    since = read_watermark(learned_dir, dlog.directory, window)
    if until <= since:
        return None
    closed = closing(dlog, since, until)
    silent = silent_decisions(closed, elog, window)
    stats: dict[str, Any] = {"closed": closed.height, "silent": silent.height}
    if silent.height:
        frame = interactions(silence_events(silent), silent, plan.model.feedback.weights)
        learned = learn_from(learner, frame, silent) or {}
        stats.update({k: v for k, v in learned.items() if k not in stats})
    write_watermark(learned_dir, dlog.directory, until)
    return stats if closed.height else None
