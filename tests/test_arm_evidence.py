"""Per-query arm evidence (issue 14, item 3): before allocating, arms that can say cheaply
how well they would answer are asked (``Arm.evidence_batch``), and a vw policy with the
``evidence`` group learns from what they say."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import polars as pl
import pytest

from ltrr.compiler import compile_spec
from ltrr.components import Arm, Params
from ltrr.errors import CompileError
from ltrr.feedback.interactions import INTERACTION_COLUMNS
from ltrr.hookspecs import hookimpl
from ltrr.registry import build_registry
from ltrr.runtime.pipeline import Pipeline
from ltrr.runtime.workspace import Workspace
from ltrr.spec import load_spec_text
from ltrr.types import Candidate, PolicyContext, Query, action_key

#: the queries arm x "knows" (as a memory would): for those the target is x's rank 8,
#: for the others y's. Nothing in the text tells them apart.
rng = random.Random(11)
NAMES = ["".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3))
         for _ in range(2000)]
KNOWN = set(rng.sample(NAMES, 1000))


class KnowingArm(Arm):
    name = "knowing"

    def retrieve_batch(self, requests):
        return [[Candidate(f"{self.ctx.node_id}-{j}", self.ctx.node_id, j, 1.0 / j)
                 for j in range(1, r.k + 1)] for r in requests]

    def evidence_batch(self, contexts):
        if self.ctx.node_id != "x":
            return [{} for _ in contexts]
        if any(c.query.text == "boom" for c in contexts):
            raise RuntimeError("index gone")
        return [{"known": 1.0 if c.query.text in KNOWN else 0.0, "how": "exact"}
                for c in contexts]


class KnowingParams(Params):
    pass


KnowingArm.Params = KnowingParams


@pytest.fixture()
def make_plan(tmp_path):
    registry = build_registry(extra=[("knowing", SimpleNamespace(
        ltrr_components=hookimpl(lambda: [KnowingArm])))])
    pl.DataFrame({"id": ["a"]}).write_parquet(tmp_path / "c.parquet")

    def _make(with_: str, folder: str = "p"):
        d = tmp_path / folder
        d.mkdir(exist_ok=True)
        text = f"""
name: t
catalog: {{path: ../c.parquet}}
arms:
  - {{id: x, use: knowing}}
  - {{id: y, use: knowing}}
policy: {{use: vw, budget: 10, with: {with_}}}
output: {{k: 5}}
"""
        return compile_spec(load_spec_text(text, d / "spec.yaml"), registry), registry

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
            want = json.dumps([[arm, 10]])
            right.append(action_key(a.allocation) == want)
            hit = a.allocation.get(arm, 0) >= 8
            rows.append({"event_id": f"e{c.query.request_id}", "request_id": c.query.request_id,
                         "user_id": None, "query": c.query.text, "entity_id": f"{arm}-8",
                         "type": "play", "weight": 1.0, "position": 1, "timestamp": float(n),
                         "in_candidates": hit, "arms": [arm] if hit else None,
                         "allocation": [{"arm": k, "k": v} for k, v in a.allocation.items()],
                         "probability": a.probability, "action_index": a.index,
                         "pmf": json.dumps(a.pmf), "action_features": json.dumps(a.features),
                         "timings_ms": None})
        policy.learn(pl.DataFrame(rows, schema_overrides={"timings_ms": pl.String})
                     .select(INTERACTION_COLUMNS))
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
