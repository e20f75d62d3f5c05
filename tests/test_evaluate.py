"""``ltrr evaluate`` with ``--by`` and ``--per-arm``: the breakdown functions, then the CLI end
to end on the embedded Last.fm catalog with the default pipeline and the typed query set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltrr.errors import RunError
from ltrr.evaluation import (
    arm_runs, evaluate_breakdown, evaluate_run, groups_by, read_query_fields)
from ltrr.types import Action, Candidate, Decision, Query, Ranked

ROOT = Path(__file__).resolve().parents[1]
LTRR = str(Path(sys.executable).with_name("ltrr"))
QUERIES = ROOT / "examples/data/lastfm/queries/queries.jsonl"
QRELS = ROOT / "examples/data/lastfm/queries/qrels.tsv"
TYPES = ["exact", "misspelled", "partial", "tag", "like", "vague"]


def decision(qid: str, ranking: list[str], **arms: list[str]) -> Decision:
    cands = {arm: [Candidate(e, arm, r, 1.0) for r, e in enumerate(ids, 1)]
             for arm, ids in arms.items()}
    return Decision(qid, Query(qid, qid), "h", [], Action({a: 10 for a in arms}), cands,
                    [Ranked(r, e, 1.0 / r, []) for r, e in enumerate(ranking, 1)], {}, [], 0.0)


def test_arm_runs_keep_the_arms_rank_order_and_empty_lists():
    decisions = [decision("q1", ["a", "b"], x=["b", "a"]), decision("q2", ["c"], y=["c"])]
    runs = arm_runs(decisions, ["x", "y"])
    qrels = {"q1": {"a": 1}, "q2": {"c": 1}}
    # every candidate of x scores 1.0: ordering by score would tie; the arm's rank order holds
    out = evaluate_breakdown({"q1": {}, "q2": {}}, qrels, ["R@1", "R@2"], arms=runs)
    assert runs["x"]["q2"] == {} and runs["y"]["q1"] == {}
    assert out["arms"]["x"]["measures"] == {"R@1": 0.0, "R@2": 0.5}   # q2: nothing → 0
    assert out["arms"]["y"]["measures"] == {"R@1": 0.5, "R@2": 0.5}
    assert out["arms"]["x"]["queries_with_candidates"] == 1


def test_breakdown_by_group_and_arm():
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(4)}
    run = {"q0": {"d0": 1.0}, "q1": {"d1": 0.5, "zz": 1.0}, "q2": {}, "q3": {"d3": 1.0}}
    groups = {"q0": "a", "q1": "a", "q2": "b", "q3": "b"}
    arms = {"lex": {"q0": {"d0": 1.0}, "q1": {}, "q2": {"d2": 1.0}, "q3": {}}}
    out = evaluate_breakdown(run, qrels, ["R@1", "R@2"], groups=groups, arms=arms)
    assert list(out["groups"]) == ["a", "b"]
    assert out["groups"]["a"] == {"queries": 2, "measures": {"R@1": 0.5, "R@2": 1.0}}
    assert out["groups"]["b"] == {"queries": 2, "measures": {"R@1": 0.5, "R@2": 0.5}}
    lex = out["arms"]["lex"]
    assert lex["measures"] == {"R@1": 0.5, "R@2": 0.5}
    assert lex["groups"]["a"]["measures"]["R@1"] == 0.5
    assert lex["groups"]["b"] == {"queries": 2, "queries_with_candidates": 1,
                                  "measures": {"R@1": 0.5, "R@2": 0.5}}
    # the groups partition the queries: their weighted mean is the overall figure
    overall = evaluate_run(run, qrels, ["R@1"])["measures"]["R@1"]
    assert overall == pytest.approx(sum(g["measures"]["R@1"] * g["queries"]
                                        for g in out["groups"].values()) / 4)


def test_groups_by_reads_extra_jsonl_fields(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "a", "query": "x", "type": "exact"}\n'
                    '{"id": "b", "query": "y", "type": "tag", "n": 3}\n'
                    '{"id": "c", "query": "z"}\n')
    fields = read_query_fields(path)
    assert groups_by(fields, ["a", "b", "c"], "type", path) == {
        "a": "exact", "b": "tag", "c": "(none)"}
    assert groups_by(fields, ["a", "b"], "n", path) == {"a": "(none)", "b": "3"}
    with pytest.raises(RunError, match="no judged query has a field 'kind'") as e:
        groups_by(fields, ["a", "b"], "kind", path)
    assert "type" in e.value.hint
    tsv = tmp_path / "q.tsv"
    tsv.write_text("a\tx\n")
    with pytest.raises(RunError, match="--by needs a JSONL query file"):
        read_query_fields(tsv)


# --- end to end -----------------------------------------------------------------------------

def ltrr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LTRR, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def spec(music_spec) -> Path:
    """pipelines/music.yaml with its state in a temp folder, indexed once."""
    return music_spec


def test_evaluate_by_type_per_arm_json(spec):
    done = ltrr("evaluate", str(spec), "--queries", str(QUERIES), "--qrels", str(QRELS),
                "--by", "type", "--per-arm", "--json", "--measures", "R@10", "R@100")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["by"] == "type" and out["judged_queries"] == 1200
    assert list(out["groups"]) == TYPES
    for g in out["groups"].values():
        assert g["queries"] == 200 and set(g["measures"]) == {"R@10", "R@100"}
    assert {"names", "lexical"} <= set(out["arms"])
    names = out["arms"]["names"]
    assert list(names["groups"]) == TYPES
    assert set(names["measures"]) == {"R@10", "R@100"}
    # entity lookup finds artists by name, not by description
    assert names["groups"]["exact"]["measures"]["R@10"] > 0.9
    assert names["groups"]["misspelled"]["measures"]["R@10"] > 0.5
    assert names["groups"]["tag"]["measures"]["R@10"] < 0.1
    assert names["groups"]["vague"]["measures"]["R@10"] < 0.1
    # BM25 over tag_text reaches the target of a tag query within its 90 candidates
    lexical = out["arms"]["lexical"]["groups"]
    assert lexical["tag"]["measures"]["R@100"] > 0.7
    assert lexical["tag"]["measures"]["R@100"] > lexical["tag"]["measures"]["R@10"]
    # the per-group figures partition the overall one
    for m in ("R@10", "R@100"):
        mean = sum(out["groups"][t]["measures"][m] for t in TYPES) / len(TYPES)
        assert out["measures"][m] == pytest.approx(mean)


def test_evaluate_tables_and_a_bad_field(spec, tmp_path):
    subset = tmp_path / "q.jsonl"
    lines = QUERIES.read_text(encoding="utf-8").splitlines()
    subset.write_text("\n".join(line for line in lines
                                if json.loads(line)["id"].endswith(("-001", "-002"))) + "\n")
    done = ltrr("evaluate", str(spec), "--queries", str(subset), "--qrels", str(QRELS),
                "--by", "type", "--per-arm", "--measures", "R@10")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "R@10 of the ranking and of each arm's candidates, by type" in text
    header = next(line.split() for line in text.splitlines()
                  if line.split()[:1] == ["type"] and "ranking" in line.split())
    assert header[:4] == ["type", "n", "ranking", "names"] and "lexical" in header
    for t in TYPES + ["all"]:
        assert any(line.split()[:1] == [t] for line in text.splitlines()), t

    done = ltrr("evaluate", str(spec), "--queries", str(subset), "--qrels", str(QRELS),
                "--by", "kind")
    assert done.returncode == 1
    assert "no judged query has a field 'kind'" in done.stderr and "type" in done.stderr
    assert "Traceback" not in done.stderr


def _reference_metrics(groups, k=10):
    """MRR and nDCG@k written out by hand (exponential gain, stable order on ties): what
    the learned rankers' gate computed before it moved to ir-measures."""
    import numpy as np

    rr, nd = [], []
    for scores, labels in groups:
        if not (labels > 0).any():
            continue
        lab = labels[np.argsort(-scores, kind="stable")]
        rr.append(1.0 / (int(np.argmax(lab > 0)) + 1))
        top = np.clip(lab[:k], 0, None)
        dcg = ((2.0 ** top - 1) / np.log2(np.arange(2, len(top) + 2))).sum()
        ideal = np.sort(np.clip(labels, 0, None))[::-1][:k]
        idcg = ((2.0 ** ideal - 1) / np.log2(np.arange(2, len(ideal) + 2))).sum()
        nd.append(dcg / idcg)
    return {"mrr": round(float(np.mean(rr)), 4), "ndcg@10": round(float(np.mean(nd)), 4),
            "requests": len(rr)}


@pytest.mark.parametrize("seed", range(5))
def test_graded_metrics_match_the_definitions_with_ties_and_fractional_labels(seed):
    import numpy as np

    from ltrr.evaluation import graded_metrics

    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(300):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, 5, n).astype(float)          # many ties
        labels = rng.choice([0, 0, 0, 0, 0.5, 1.0, 2.5], n).astype(np.float32)
        groups.append((scores, labels))
    assert graded_metrics(groups) == _reference_metrics(groups)
    assert graded_metrics([(np.array([1.0]), np.array([0.0]))]) == {
        "mrr": 0.0, "ndcg@10": 0.0, "requests": 0}
