"""``weighted`` merger: weighted sum of per-arm scores after per-arm normalisation.

Raw scores of different arms live on different scales (BM25 ~ 5–30, cosine ~ 0–1),
so each arm's list is normalised first: ``minmax`` maps it to [0, 1], ``zscore``
to mean 0 and unit variance, ``none`` keeps raw scores. An entity an arm did not
return contributes nothing from that arm.

A constant list (equal scores, or a single candidate) maps to 1.0 under ``minmax``: each
of its hits gets the arm's full weight. ranx maps such a list to 0 (it divides by
max(max − min, 1e-9)), so fused scores, and possibly orders, differ from ranx's when an
arm returns one hit or equal scores. ``zscore`` maps it to 0.

Ties: entities with equal fused scores keep the order in which they were first seen —
arms in the order of the policy's allocation (the spec's arm order for the learning
policies and for ``static`` without ``allocation:``; the order written in ``allocation:``
otherwise), each arm's list in rank order. The ``score`` ranker keeps that order, so it
is the served order.
"""

from __future__ import annotations

import enum
import math

from pydantic import Field

from ltrr.components import Merger, Params, PlanView, Problem
from ltrr.hookspecs import hookimpl
from ltrr.types import Candidate, Merged
from ltrr_plugins.mergers.union import group_by_entity, unknown_arm_weights


class Normalization(str, enum.Enum):
    MINMAX = "minmax"
    ZSCORE = "zscore"
    NONE = "none"


class WeightedParams(Params):
    weights: dict[str, float] = Field(default_factory=dict, description=(
        "Per-arm weight (default 1.0)."))
    normalize: Normalization = Field(Normalization.MINMAX, description=(
        "Per-arm score normalisation before weighting: minmax, zscore or none. A constant "
        "list (one hit, or equal scores) maps to 1.0 under minmax (ranx: 0), to 0 under "
        "zscore."))


def normalized(scores: list[float], how: Normalization) -> list[float]:
    """``scores`` rescaled as ``how`` says (a constant list maps to 1.0 for minmax, 0 z)."""
    if how is Normalization.NONE or not scores:
        return list(scores)
    if how is Normalization.MINMAX:
        lo, hi = min(scores), max(scores)
        return [1.0] * len(scores) if hi == lo else [(s - lo) / (hi - lo) for s in scores]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return [0.0] * len(scores) if std == 0 else [(s - mean) / std for s in scores]


class WeightedMerger(Merger):
    """Weighted sum of per-arm normalised scores (min-max or z-score), with provenance."""

    name = "weighted"
    Params = WeightedParams

    @classmethod
    def check(cls, params: WeightedParams, plan: PlanView) -> list[Problem]:
        return unknown_arm_weights(params.weights, plan)

    def merge(self, per_arm: dict[str, list[Candidate]], k: int) -> list[Merged]:
        fused: dict[int, float] = {}
        for arm, cands in per_arm.items():
            w = self.params.weights.get(arm, 1.0)
            for c, s in zip(cands, normalized([c.score for c in cands], self.params.normalize)):
                fused[id(c)] = w * s
        merged = [Merged(entity, sum(fused[id(c)] for c in hits), hits)
                  for entity, hits in group_by_entity(per_arm).items()]
        merged.sort(key=lambda m: -m.score)
        return merged[:k]


@hookimpl
def ltrr_components():
    return [WeightedMerger]
