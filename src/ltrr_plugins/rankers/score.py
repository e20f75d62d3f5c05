"""``score`` ranker: keeps the merger's fused order (the baseline every learned ranker beats)."""

from __future__ import annotations

from ltrr.components import Ranker
from ltrr.hookspecs import hookimpl
from ltrr.types import Merged, Query, Ranked


class ScoreRanker(Ranker):
    """Orders candidates by their fused score from the merger."""

    name = "score"

    def rank(self, query: Query, merged: list[Merged], k: int) -> list[Ranked]:
        ordered = sorted(merged, key=lambda m: -m.score)[:k]
        return [Ranked(i + 1, m.entity_id, m.score, m.sources) for i, m in enumerate(ordered)]


@hookimpl
def ltrr_components():
    return [ScoreRanker]
