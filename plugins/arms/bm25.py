"""``bm25`` arm: lexical retrieval with Lucene BM25 (Anserini, through pyserini's jar).

Indexes the declared catalog columns as separate Lucene fields (plus a ``contents``
field concatenating them) and searches them with per-field boosts. The query is
analysed into terms — never parsed as Lucene syntax — so user text like
``name:x OR *:*`` is just words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pydantic import Field

from ltrr.components import Arm, Indexed, Params
from ltrr.errors import StateError
from ltrr.hookspecs import hookimpl
from ltrr.types import ArmRequest, Candidate


class Bm25Params(Params):
    fields: dict[str, float] = Field(min_length=1, description=(
        "Catalog columns to index, each with its query-time boost, e.g. {name: 3, tags: 1}. "
        "List columns are joined with ', '."))
    flat: bool = Field(False, description=(
        "Search one 'contents' field (all columns concatenated) instead of the boosted "
        "fields — Anserini's BEIR 'flat' setting."))
    k1: float = Field(0.9, gt=0, description="BM25 term-frequency saturation.")
    b: float = Field(0.4, ge=0, le=1, description="BM25 length normalisation.")
    threads: int = Field(1, ge=1, description="Lucene search threads for a batch.")


class Bm25Arm(Arm, Indexed):
    """Lucene BM25 over catalog fields with per-field boosts (pyserini/Anserini)."""

    name = "bm25"
    Params = Bm25Params

    def _docs(self, columns: list[str]):
        frame = self.ctx.catalog.frame
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise StateError(f"catalog has no column(s) {', '.join(missing)}",
                             node=self.ctx.node_id, field="with.fields",
                             hint=f"columns: {', '.join(frame.columns)}")
        ids = self.ctx.catalog.ids
        values = [frame[c].to_list() for c in columns]
        for i, entity in enumerate(ids):
            doc = {"id": entity}
            for c, col in zip(columns, values):
                v = col[i]
                doc[c] = ", ".join(map(str, v)) if isinstance(v, list) else ("" if v is None
                                                                              else str(v))
            yield doc

    def state_key(self) -> dict[str, Any]:
        # boosts, k1, b, flat and threads are query-time settings: only the fields matter
        return {"fields": sorted(self.params.fields)}

    def build(self, out_dir: Path, progress: Callable[[int, int], None]) -> dict[str, Any]:
        from ltrr_plugins.arms import lucene

        columns = list(self.params.fields)
        total = len(self.ctx.catalog)
        n = lucene.build_index(self._docs(columns), out_dir / "lucene", columns,
                               progress=lambda done: progress(done, total))
        return {"documents": n}

    def open(self) -> None:
        from ltrr_plugins.arms import lucene

        self._searcher = lucene.LuceneSearcher(self.ctx.state_dir / "lucene",
                                               k1=self.params.k1, b=self.params.b)
        self._fields = None if self.params.flat else dict(self.params.fields)

    def close(self) -> None:
        searcher = getattr(self, "_searcher", None)
        if searcher is not None:
            searcher.close()

    def retrieve_batch(self, requests: list[ArmRequest]) -> list[list[Candidate]]:
        k = max(r.k for r in requests)
        hits = self._searcher.search_batch([r.query.text for r in requests], k,
                                           fields=self._fields, threads=self.params.threads)
        arm = self.ctx.node_id
        return [[Candidate(doc, arm, rank, score)
                 for rank, (doc, score) in enumerate(found[:r.k], 1)]
                for r, found in zip(requests, hits)]


@hookimpl
def ltrr_components():
    return [Bm25Arm]
