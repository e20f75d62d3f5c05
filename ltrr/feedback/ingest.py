"""``ltrr feedback``: log new events durably, then let every learner catch up on them.

Each learner keeps a cursor (the event-log parts it has learned from) next to its
learned state. Learning happens after the events are safely logged, and a
learner's cursor advances only after its ``learn`` returned, so a learner that
failed or was interrupted catches up on the next ingestion (at-least-once), and
a learner added to a pipeline later learns from the whole history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from ltrr.compiler import Plan
from ltrr.components import Component, Learner
from ltrr.feedback.events import EventLog, read_events
from ltrr.feedback.interactions import interactions, learn_from
from ltrr.runtime.decision_log import DecisionLog
from ltrr.runtime.workspace import Workspace
from ltrr.state import atomic_write_json

CURSOR = "cursor.json"


def event_log(plan: Plan) -> EventLog:
    """The pipeline's feedback event log."""
    return EventLog(plan.spec.state_dir / "events")


def decision_log(plan: Plan) -> DecisionLog:
    """The pipeline's decision log."""
    m = plan.model
    return DecisionLog(plan.spec.resolve(m.log.path) if m.log.path
                       else plan.spec.state_dir / "decisions")


def decisions_for(plan: Plan, request_ids: list[str], log: DecisionLog | None = None
                  ) -> pl.DataFrame:
    """The decisions with these request ids, from ``log`` (default: the plan's own),
    read lazily: only what is needed."""
    log = log or decision_log(plan)
    parts = log.parts()
    if not parts or not request_ids:
        return log.schema.to_frame()
    return (pl.scan_parquet(parts)
            .filter(pl.col("request_id").is_in(pl.Series(request_ids).implode()))
            .collect())


def _cursor(learner: Component) -> set[str]:
    import json

    path = learner.ctx.learned_dir / CURSOR
    try:
        return set(json.loads(path.read_text())["parts"])
    except FileNotFoundError:
        return set()


def catch_up(plan: Plan, learner: Component) -> dict[str, Any] | None:
    """Feed ``learner`` every logged event it has not learned from yet."""
    log = event_log(plan)
    done = _cursor(learner)
    pending = [p for p in log.parts() if p.name not in done]
    if not pending:
        return None
    events = log.read(pending)
    ids = events["request_id"].drop_nulls().unique().to_list()
    decisions = decisions_for(plan, ids)
    joined = interactions(events, decisions, plan.model.feedback.weights)
    stats = learn_from(learner, joined, decisions)
    atomic_write_json(learner.ctx.learned_dir / CURSOR,
                      {"parts": sorted(done | {p.name for p in pending})})
    return stats


def ingest(plan: Plan, events: pl.DataFrame, workspace: Workspace | None = None
           ) -> dict[str, Any]:
    """Append ``events`` not seen before, then bring every learner up to date."""
    new = event_log(plan).append_new(events)
    report: dict[str, Any] = {"received": events.height, "new": new.height, "learners": {}}
    own = workspace is None
    workspace = workspace or Workspace(plan)
    try:
        for node in plan.nodes:
            if issubclass(node.registration.cls, Learner):
                stats = catch_up(plan, workspace.opened(node.id))
                if stats is not None:
                    report["learners"][node.id] = stats
    finally:
        if own:
            workspace.close()
    return report


def ingest_file(plan: Plan, path: Path) -> dict[str, Any]:
    """Read, validate and ingest an events file (JSONL or Parquet)."""
    return ingest(plan, read_events(path, plan.model.feedback.weights))
