"""Per-query arm evidence (issue 14, item 3): before allocating, arms that can say cheaply
how well they would answer are asked (``Arm.evidence_batch``), and a vw policy with the
``evidence`` group learns from what they say."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest
from conftest import ListArm, decision_row, interactions_of, list_plan, plugin

from ltrr.errors import CompileError
from ltrr.registry import build_registry
from ltrr.runtime.pipeline import Pipeline
from ltrr.runtime.workspace import Workspace
from ltrr.types import PolicyContext, Query, action_key

#: the queries arm x "knows" (as a memory would): for those the target is x's rank 8,
#: for the others y's. Nothing in the text tells them apart.
rng = random.Random(11)
NAMES = ["".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))
         for _ in range(2000)]
KNOWN = set(rng.sample(NAMES, 1000))


class KnowingArm(ListArm):
    """A listing arm whose evidence (on node x) says whether it knows the query."""

    name = "knowing"

    def evidence_batch(self, contexts):
        if self.ctx.node_id != "x":
            return [{} for _ in contexts]
        if any(c.query.text == "boom" for c in contexts):
            raise RuntimeError("index gone")
        return [{"known": 1.0 if c.query.text in KNOWN else 0.0, "how": "exact"}
                for c in contexts]


@pytest.fixture()
def make_plan(tmp_path):
    registry = build_registry(extra=[("knowing", plugin(KnowingArm))])
    pl.DataFrame({"id": ["a"]}).write_parquet(tmp_path / "c.parquet")

    def _make(with_: str, folder: str = "p"):
        plan = list_plan(tmp_path / folder, registry,
                         f"{{use: vw, budget: 10, with: {with_}}}", use="knowing")
        return plan, registry

    return _make


def test_the_pipeline_asks_the_arms_and_logs_what_they_said(make_plan):
    plan, registry = make_plan("{step: 5, features: [query, evidence]}")
    known = sorted(KNOWN)[0]
    with Pipeline(plan, registry=registry) as p:
        d = p.run(Query("r1", known))
        assert d.action.features["evidence"] == {"x_known": 1.0, "x_how": "exact"}
        assert "evidence" in d.timings_ms
        # an arm whose evidence fails gives none this time; the query is answered
        d = p.run(Query("r2", "boom"))
        assert d.ranking and d.action.features["evidence"] == {}
        assert any("gave no evidence" in t and "index gone" in t for t in d.trace)


def test_without_the_group_no_arm_is_asked(make_plan):
    plan, registry = make_plan("{step: 5}")
    with Pipeline(plan, registry=registry) as p:
        d = p.run(Query("r1", "boom"))          # would raise if asked
        assert "evidence" not in d.timings_ms and d.trace == []


def test_evidence_arms_must_name_arms(make_plan):
    with pytest.raises(CompileError, match="'z' is not an arm"):
        make_plan("{step: 5, features: [evidence], evidence_arms: [z]}")


def _learn(policy, n_rounds: int = 50, batch: int = 20) -> float:
    right, n = [], 0
    for _ in range(n_rounds):
        contexts = []
        for _ in range(batch):
            n += 1
            text = NAMES[n % len(NAMES)]
            contexts.append(PolicyContext(Query(f"q{n}", text), [], {
                "x": {"known": 1.0 if text in KNOWN else 0.0}}))
        actions = policy.choose_batch(contexts)
        rows = []
        for a, c in zip(actions, contexts):
            arm = "x" if c.query.text in KNOWN else "y"
            right.append(action_key(a.allocation) == json.dumps([[arm, 10]]))
            hit = a.allocation.get(arm, 0) >= 8
            rows.append(decision_row(a, c, f"{arm}-8", timestamp=float(n),
                                     hit_arm=arm if hit else None))
        policy.learn(interactions_of(rows))
    return sum(right[-200:]) / 200


def test_vw_learns_from_evidence_what_no_text_feature_shows(make_plan):
    shares = {}
    for label, with_ in (("evidence", "{step: 5, features: [query, text, evidence]}"),
                         ("blind", "{step: 5, features: [query, text]}")):
        plan, _ = make_plan(with_, folder=label)
        ws = Workspace(plan)
        try:
            shares[label] = _learn(ws.opened("policy"))
        finally:
            ws.close()
    assert shares["evidence"] > 0.8, shares
    assert shares["blind"] < 0.65, shares
