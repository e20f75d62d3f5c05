"""``ltrr feedback``: log new events durably, then let every learner learn from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from ltrr.compiler import Plan
from ltrr.components import Learner
from ltrr.feedback.events import EventLog, read_events
from ltrr.feedback.interactions import interactions
from ltrr.runtime.decision_log import DecisionLog
from ltrr.runtime.workspace import Workspace


def event_log(plan: Plan) -> EventLog:
    return EventLog(plan.spec.state_dir / "events")


def decision_log(plan: Plan) -> DecisionLog:
    m = plan.model
    return DecisionLog(plan.spec.resolve(m.log.path) if m.log.path
                       else plan.spec.state_dir / "decisions")


def decisions_for(plan: Plan, request_ids: list[str]) -> pl.DataFrame:
    """The logged decisions with these request ids (read lazily, only what is needed)."""
    log = decision_log(plan)
    parts = log.parts()
    if not parts or not request_ids:
        return log.schema.to_frame()
    return (pl.scan_parquet(parts)
            .filter(pl.col("request_id").is_in(pl.Series(request_ids).implode()))
            .collect())


def ingest(plan: Plan, events: pl.DataFrame, workspace: Workspace | None = None
           ) -> dict[str, Any]:
    """Append ``events`` not seen before, then feed them to the plan's learners."""
    new = event_log(plan).append_new(events)
    report: dict[str, Any] = {"received": events.height, "new": new.height, "learners": {}}
    if new.height == 0:
        return report
    ids = new["request_id"].drop_nulls().unique().to_list()
    joined = interactions(new, decisions_for(plan, ids), plan.model.feedback.weights)
    own = workspace is None
    workspace = workspace or Workspace(plan)
    try:
        for node in plan.nodes:
            if issubclass(node.registration.cls, Learner):
                learner = workspace.opened(node.id)
                report["learners"][node.id] = learner.learn(joined)
    finally:
        if own:
            workspace.close()
    return report


def ingest_file(plan: Plan, path: Path) -> dict[str, Any]:
    """Read, validate and ingest an events file (JSONL or Parquet)."""
    return ingest(plan, read_events(path, plan.model.feedback.weights))
