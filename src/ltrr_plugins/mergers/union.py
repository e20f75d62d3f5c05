"""``union`` merger: every arm's candidates, deduplicated, keeping each arm that found them.

Entities are ordered by their best rank in any arm (score 1 / best rank), then by the
number of arms that found them (more first).

Remaining ties keep the order in which the entities were first seen — arms in the order
of the policy's allocation (the spec's arm order for the learning policies and for
``static`` without ``allocation:``; the order written in ``allocation:`` otherwise), each
arm's list in rank order. The ``score`` ranker keeps that order, so it is the served
order.
"""

from __future__ import annotations

from ltrr.components import Merger, PlanView, Problem
from ltrr.hookspecs import hookimpl
from ltrr.types import Candidate, Merged


def group_by_entity(per_arm: dict[str, list[Candidate]]) -> dict[str, list[Candidate]]:
    """Candidates grouped by entity id, in first-seen order (arms in the order given, each
    arm's list in rank order): the mergers' tie order, kept by their stable sorts."""
    groups: dict[str, list[Candidate]] = {}
    for candidates in per_arm.values():
        for c in candidates:
            groups.setdefault(c.entity_id, []).append(c)
    return groups


def unknown_arm_weights(weights: dict[str, float], plan: PlanView) -> list[Problem]:
    """A problem for each per-arm weight naming something that is not an arm."""
    return [Problem(f"weights name '{arm}', which is not an arm", ("weights", arm),
                    hint=f"arms: {', '.join(plan.arms)}")
            for arm in weights if arm not in plan.arms]


class UnionMerger(Merger):
    """Union with provenance, ordered by best rank in any arm, then by arms that found it."""

    name = "union"

    def merge(self, per_arm: dict[str, list[Candidate]], k: int) -> list[Merged]:
        merged = [Merged(entity, 1.0 / min(c.rank for c in hits), hits)
                  for entity, hits in group_by_entity(per_arm).items()]
        merged.sort(key=lambda m: (-m.score, -len(m.sources)))
        return merged[:k]


@hookimpl
def ltrr_components():
    return [UnionMerger]
