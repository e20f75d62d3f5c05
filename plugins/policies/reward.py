"""Rewards of logged decisions, from interactions (feedback events joined to decisions).

The reward of one decision is the best of its events: ``max(weight(type) ×
[entity in the candidate set])`` — did the user engage with something the arms
retrieved — minus optional costs: ``cost_per_candidate × candidates allocated`` and
``cost_per_ms × latency`` (the slowest allocated arm, when the interactions carry the
decision's ``timings_ms``). Events of a request the log does not know are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ltrr.components import Params

if TYPE_CHECKING:
    import polars as pl


class RewardParams(Params):
    """How a decision's events become its reward."""

    cost_per_candidate: float = Field(0.0, ge=0, description=(
        "Subtracted per candidate allocated (same for every action that fills the budget)."))
    cost_per_ms: float = Field(0.0, ge=0, description=(
        "Subtracted per millisecond of the slowest allocated arm (needs the decision's "
        "timings in the interactions)."))


@dataclass
class Outcome:
    """One decision's learning example: what was chosen, with what probability, and how
    it went."""

    request_id: str
    allocation: dict[str, int]
    probability: float
    reward: float
    features: dict | None
    query: str | None
    user_id: str | None
    timestamp: float
    engaged: list[tuple[str, list[str]]] = field(default_factory=list)  # (entity, its arms)
    action_index: int | None = None
    positive: bool = False    # some event had a positive weight (in the candidates or not)


def outcomes(interactions: "pl.DataFrame", params: RewardParams | None = None) -> list[Outcome]:
    """One :class:`Outcome` per decision with events, oldest first."""
    params = params or RewardParams()
    rows = interactions.filter(interactions["allocation"].is_not_null()) \
        if "allocation" in interactions.columns else interactions.clear()
    by_request: dict[str, list[dict[str, Any]]] = {}
    for r in rows.iter_rows(named=True):
        by_request.setdefault(r["request_id"], []).append(r)
    out: list[Outcome] = []
    for rid, events in by_request.items():
        first = events[0]
        alloc = {a["arm"]: int(a["k"]) for a in first["allocation"]}
        best = max(((e["weight"] or 0.0) * (1.0 if e["in_candidates"] else 0.0))
                   for e in events)
        cost = params.cost_per_candidate * sum(alloc.values())
        if params.cost_per_ms and first.get("timings_ms"):
            t = json.loads(first["timings_ms"])
            cost += params.cost_per_ms * max((float(t.get(a, 0.0)) for a in alloc), default=0.0)
        engaged = [(e["entity_id"], list(e["arms"] or [])) for e in events
                   if e["in_candidates"] and (e["weight"] or 0.0) > 0]
        feats = json.loads(first["action_features"]) if first.get("action_features") else None
        ts = min((e["timestamp"] for e in events if e["timestamp"] is not None), default=0.0)
        positive = any((e["weight"] or 0.0) > 0 for e in events)
        out.append(Outcome(rid, alloc, float(first["probability"] or 1.0), best - cost, feats,
                           first["query"], first["user_id"], ts, engaged,
                           first.get("action_index"), positive))
    out.sort(key=lambda o: o.timestamp)
    return out
