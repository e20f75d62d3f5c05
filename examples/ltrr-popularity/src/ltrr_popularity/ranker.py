"""``popularity`` ranker: re-rank merged candidates by fused score blended with popularity.

For every candidate of a query's merged list::

    score = (1 - weight) * fused + weight * popularity

where ``fused`` is the merger's score (min-max normalised over the list unless
``normalize: none``) and ``popularity`` is the candidate's value in a catalog column
(in [0, 1]; entities missing from the catalog or with a null value count as 0). Ties
keep the merger's order, so ``weight: 0`` reproduces the ``score`` ranker.

Spec usage::

    requires: [ltrr-popularity]
    ranker:
      use: popularity
      with: {column: popularity, weight: 0.3}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ltrr.components import ColumnUse, Params, Ranker, TableUse
from ltrr.errors import StateError
from ltrr.types import Merged, Query, Ranked


class PopularityParams(Params):
    column: str = Field("popularity", min_length=1, description=(
        "Catalog column holding each entity's popularity, a number in [0, 1]."))
    weight: float = Field(0.3, ge=0, le=1, description=(
        "Share of popularity in the blend: score = (1 - weight) * fused + weight * popularity."))
    normalize: Literal["minmax", "none"] = Field("minmax", description=(
        "'minmax' rescales the fused scores of each list to [0, 1] before blending, so they "
        "are on popularity's scale; 'none' blends them as the merger returned them."))


class PopularityRanker(Ranker):
    """Blends the fused score with a catalog popularity column (popular entities rise)."""

    name = "popularity"
    Params = PopularityParams

    @classmethod
    def tables(cls, params: PopularityParams) -> list[TableUse]:
        """The catalog column it reads: `ltrr validate` checks it is there, and numeric."""
        return [TableUse((ColumnUse(params.column, ("column",), "number"),))]

    def open(self) -> None:
        """Load entity id → popularity from the catalog column ``with.column``."""
        catalog = self.ctx.catalog
        column = self.params.column
        frame = catalog.frame
        where = {"node": self.ctx.node_id, "field": "with.column"}
        if column not in frame.columns:
            raise StateError(f"catalog {catalog.path.name} has no column '{column}'", **where,
                             hint=f"set with.column to one of: {', '.join(frame.columns)}")
        values = frame[column]
        if not values.dtype.is_numeric():
            raise StateError(f"catalog column '{column}' holds {values.dtype}, not numbers",
                             **where, hint="use a numeric column with values in [0, 1]")
        values = values.cast(float).fill_nan(None)
        lo, hi = values.min(), values.max()
        if lo is not None and (lo < 0 or hi > 1):
            raise StateError(f"catalog column '{column}' has values outside [0, 1] "
                             f"(min {lo:g}, max {hi:g})", **where,
                             hint="use a column scaled to [0, 1], e.g. "
                                  "log1p(plays) / max(log1p(plays))")
        self._popularity: dict[str, float] = {
            entity: p for entity, p in zip(catalog.ids, values.to_list()) if p is not None}

    def rank(self, query: Query, merged: list[Merged], k: int) -> list[Ranked]:
        if not merged:
            return []
        weight, popularity = self.params.weight, self._popularity
        fused = [m.score for m in merged]
        if self.params.normalize == "minmax":
            lo, hi = min(fused), max(fused)
            fused = [(s - lo) / (hi - lo) if hi > lo else 1.0 for s in fused]
        blended = [((1.0 - weight) * f + weight * popularity.get(m.entity_id, 0.0), m)
                   for f, m in zip(fused, merged)]
        blended.sort(key=lambda pair: -pair[0])     # stable: ties keep the merger's order
        return [Ranked(i + 1, m.entity_id, score, m.sources)
                for i, (score, m) in enumerate(blended[:k])]
