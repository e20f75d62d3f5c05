"""Rewards of logged decisions, from interactions (feedback events joined to decisions).

The reward of one decision is the best of its events: ``max(0, weight(type) ×
type_weight(entity type) × [entity in the candidate set])`` — did the user engage with
something the arms retrieved, and of which entity type (a typed catalog) — minus
optional costs: ``cost_per_candidate × candidates allocated`` and
``cost_per_ms × latency`` (the slowest allocated arm, when the interactions carry the
decision's ``timings_ms``). Events of a request the log does not know are ignored.

The floor at 0: a negative weight (a skip of a shown candidate) does not lower a
decision below "nothing engaged". Otherwise an allocation whose candidates were shown
and passed over would score below one that retrieved nothing at all — a silent, empty
answer (reward 0) — and the policy would learn to return nothing (measured on the
simulator: "like X" queries sent to an arm that finds nothing for them, 92 % of the
time). Skips still teach the memory arm and the rankers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

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
    type_weights: dict[str, float] = Field(default_factory=dict, description=(
        "A typed catalog: multiplier of an engagement's weight by the engaged entity's "
        "type, e.g. {station: 2.0} when a station played is worth two artist clicks; "
        "types left out count 1. Each must be one of catalog.types.values."))

    @field_validator("type_weights")
    @classmethod
    def _finite(cls, v: dict[str, float]) -> dict[str, float]:
        for t, w in v.items():
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"type_weights.{t} must be a finite number ≥ 0, got {w}")
        return v


@dataclass
class Outcome:
    """One decision's learning example: what was chosen, with what probability, and how
    it went. ``features`` is read-only: outcomes with the same logged features share
    one dict."""

    request_id: str
    allocation: dict[str, int]
    probability: float | None    # None: logged without a usable one (missing, 0, > 1, NaN)
    reward: float
    features: dict | None
    query: str | None
    user_id: str | None
    timestamp: float
    engaged: list[tuple[str, list[str]]] = field(default_factory=list)  # (entity, its arms)
    action_index: int | None = None
    positive: bool = False    # some event had a positive weight (in the candidates or not)
    silent: bool = False      # learned as silence: no event within the attribution window


def _propensity(prob) -> float | None:
    """The logged probability of the chosen action, None when it cannot be one."""
    if prob is None or not math.isfinite(prob) or not 0.0 < prob <= 1.0:
        return None
    return float(prob)


def outcomes(interactions: "pl.DataFrame", params: RewardParams | None = None) -> list[Outcome]:
    """One :class:`Outcome` per decision with events, oldest first."""
    import polars as pl

    from ltrr.feedback.silence import SILENCE

    params = params or RewardParams()
    if "allocation" not in interactions.columns:
        return []
    rows = interactions.filter(pl.col("allocation").is_not_null())
    if rows.height == 0:
        return []
    rows = rows.with_columns(pl.lit(None).alias(c) for c in ("action_index", "timings_ms")
                             if c not in rows.columns)
    weight = pl.col("weight").fill_null(0.0)
    if params.type_weights and "entity_type" in rows.columns:
        weight = weight * pl.col("entity_type").replace_strict(
            params.type_weights, default=1.0, return_dtype=pl.Float64)
    seen = pl.col("in_candidates").fill_null(False)
    engaged = seen & (weight > 0)
    # one row per decision, in order of first appearance; "first" = the decision's own
    # columns (the same on all its events)
    per = rows.group_by("request_id", maintain_order=True).agg(
        pl.col("allocation", "probability", "action_features", "query", "user_id",
               "action_index", "timings_ms").first(),
        (weight * seen.cast(pl.Float64)).max().clip(lower_bound=0.0).alias("best"),
        pl.col("entity_id").filter(engaged).alias("engaged"),
        pl.col("arms").filter(engaged).alias("engaged_arms"),
        pl.col("timestamp").min().fill_null(0.0).alias("ts"),
        (weight > 0).any().alias("positive"),
        (pl.col("type") == SILENCE).any().alias("silent"))
    out: list[Outcome] = []
    parsed: dict[str, dict] = {}     # identical logged features are parsed once (and shared)
    for (rid, allocation, prob, feats, query, user, index, timings, best, ents, arms, ts,
         positive, silent) in per.iter_rows():
        alloc = {a["arm"]: int(a["k"]) for a in allocation}
        cost = params.cost_per_candidate * sum(alloc.values())
        if params.cost_per_ms and timings:
            t = json.loads(timings)
            cost += params.cost_per_ms * max((float(t.get(a, 0.0)) for a in alloc), default=0.0)
        ns = None
        if feats:
            ns = parsed.get(feats)
            if ns is None:
                ns = parsed[feats] = json.loads(feats)
        out.append(Outcome(rid, alloc, _propensity(prob), best - cost, ns, query, user, ts,
                           [(e, list(a or [])) for e, a in zip(ents, arms)], index, positive,
                           bool(silent)))
    out.sort(key=lambda o: o.timestamp)
    return out
