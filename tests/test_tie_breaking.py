"""The tie rules the docs state (issue 10, item 16), pinned so the docs cannot drift.

- mergers (docstrings → docs/spec-reference.md): equal fused scores keep first-seen order,
  arms in the allocation's order, each arm's list in rank order; ``union`` first orders
  by best rank, then by the number of arms; ``weighted`` minmax maps a constant list to
  1.0 (ranx: 0); the ``score`` ranker keeps the merger's order.
- ``ltrr evaluate`` (docs/evaluation.md): ir-measures gets the served order (1/rank), not
  the ranker's scores, which pytrec_eval would re-sort by id descending and ``RR@k``
  ascending.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ltrr.components import ComponentContext, PlanView
from ltrr.evaluation import evaluate_run, run_of
from ltrr.types import Candidate, Query, Ranked
from ltrr_plugins.mergers.rrf import RrfMerger, RrfParams
from ltrr_plugins.mergers.union import UnionMerger
from ltrr_plugins.mergers.weighted import Normalization, WeightedMerger, WeightedParams, normalized
from ltrr_plugins.rankers.score import ScoreRanker

VIEW = PlanView(arms=("lexical", "memory"), slotters=(), budget=100, output_k=10,
                arm_max_k={"lexical": 100, "memory": 100})
CTX = ComponentContext("m", None, None, lambda: None, VIEW)


def hits(arm: str, ids: list[str], scores: list[float] | None = None) -> list[Candidate]:
    scores = scores or [10.0 - r for r in range(len(ids))]
    return [Candidate(e, arm, r, s) for r, (e, s) in enumerate(zip(ids, scores), 1)]


def order(merger, per_arm: dict[str, list[Candidate]]) -> list[str]:
    merged = merger.merge(per_arm, 10)
    served = ScoreRanker(None, CTX).rank(Query("r", "x"), merged, 10)
    assert [r.entity_id for r in served] == [m.entity_id for m in merged]   # ranker keeps it
    return [m.entity_id for m in merged]


MERGERS = [RrfMerger(RrfParams(), CTX), WeightedMerger(WeightedParams(), CTX),
           UnionMerger(None, CTX)]


@pytest.mark.parametrize("merger", MERGERS, ids=["rrf", "weighted", "union"])
def test_equal_fused_scores_keep_the_allocation_order_of_arms(merger):
    # "z" and "a" are rank 1 of two equally weighted arms: equal fused scores (ids chosen
    # so that neither id order nor arm-name order gives the expected order by accident)
    lexical, memory = hits("lexical", ["z", "y"]), hits("memory", ["a", "b"])
    assert order(merger, {"memory": memory, "lexical": lexical}) == ["a", "z", "b", "y"]
    assert order(merger, {"lexical": lexical, "memory": memory}) == ["z", "a", "y", "b"]


def test_union_orders_by_best_rank_then_number_of_arms_then_first_seen():
    out = order(UnionMerger(None, CTX), {"lexical": hits("lexical", ["q", "p", "c"]),
                                        "memory": hits("memory", ["r", "c"])})
    # rank 1: q, r (first seen: q); rank 2: p (1 arm) after c (2 arms, best rank 2)
    assert out == ["q", "r", "c", "p"]


def test_minmax_maps_a_constant_list_to_one_and_zscore_to_zero():
    assert normalized([3.0], Normalization.MINMAX) == [1.0]
    assert normalized([2.0, 2.0], Normalization.MINMAX) == [1.0, 1.0]
    assert normalized([2.0, 2.0], Normalization.ZSCORE) == [0.0, 0.0]
    # an arm with one hit gives it its full weight (ranx would give it 0)
    merged = WeightedMerger(WeightedParams(weights={"memory": 0.5}), CTX).merge(
        {"lexical": hits("lexical", ["a", "b"], [9.0, 1.0]),
         "memory": hits("memory", ["b"], [0.2])}, 10)
    assert {m.entity_id: m.score for m in merged} == pytest.approx({"a": 1.0, "b": 0.5})


def test_evaluate_scores_the_served_order_of_tied_entities_with_every_measure():
    # served order: "a" then "b" with equal ranker scores; only "a" is relevant. Given the
    # scores, pytrec_eval would count "b" first (id descending) and RR@k "a" first (ascending)
    decision = SimpleNamespace(request_id="q", ranking=[
        Ranked(1, "a", 1.0, []), Ranked(2, "b", 1.0, []), Ranked(3, "c", 0.5, [])])
    got = evaluate_run(run_of([decision]), {"q": {"a": 1}},
                       ["nDCG@10", "R@1", "AP", "RR", "RR@10"])["measures"]
    assert got == {"nDCG@10": 1.0, "R@1": 1.0, "AP": 1.0, "RR": 1.0, "RR@10": 1.0}
    # and when "b" (relevant) was served second, every measure sees rank 2
    got = evaluate_run(run_of([decision]), {"q": {"b": 1}}, ["R@1", "RR", "RR@10"])["measures"]
    assert got == {"R@1": 0.0, "RR": 0.5, "RR@10": 0.5}
