"""``rrf`` merger: reciprocal rank fusion (Cormack et al., 2009) with per-arm weights.

An entity at rank r of an arm of weight w gets w / (k + r) from it; equal fused scores are
common (rank 1 of two equally weighted arms).

Ties: entities with equal fused scores keep the order in which they were first seen —
arms in the order of the policy's allocation (the spec's arm order for the learning
policies and for ``static`` without ``allocation:``; the order written in ``allocation:``
otherwise), each arm's list in rank order. The ``score`` ranker keeps that order, so it
is the served order.
"""

from __future__ import annotations

from pydantic import Field

from ltrr.components import Merger, Params, PlanView, Problem
from ltrr.hookspecs import hookimpl
from ltrr.types import Candidate, Merged
from ltrr_plugins.mergers.union import group_by_entity, unknown_arm_weights


class RrfParams(Params):
    k: float = Field(60.0, ge=0, description="Rank offset: score = sum of weight / (k + rank).")
    weights: dict[str, float] = Field(default_factory=dict, description=(
        "Per-arm weight (default 1.0)."))


class RrfMerger(Merger):
    """Reciprocal rank fusion: sum over arms of weight / (k + rank), with provenance."""

    name = "rrf"
    Params = RrfParams

    @classmethod
    def check(cls, params: RrfParams, plan: PlanView) -> list[Problem]:
        return unknown_arm_weights(params.weights, plan)

    def merge(self, per_arm: dict[str, list[Candidate]], k: int) -> list[Merged]:
        weights, offset = self.params.weights, self.params.k
        merged = [Merged(entity, sum(weights.get(c.arm, 1.0) / (offset + c.rank) for c in hits),
                         hits)
                  for entity, hits in group_by_entity(per_arm).items()]
        merged.sort(key=lambda m: -m.score)
        return merged[:k]


@hookimpl
def ltrr_components():
    return [RrfMerger]
