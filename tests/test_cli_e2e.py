"""The CLI end to end, in subprocesses, on the embedded Last.fm catalog (real Lucene)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LTRR = str(Path(sys.executable).with_name("ltrr"))


def ltrr(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([LTRR, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.fixture(scope="module")
def spec(music_spec) -> Path:
    """The default music pipeline, with its state in a temp folder, indexed once."""
    return music_spec


def run_jsonl(spec: Path, *queries: str) -> list[dict]:
    args = [a for q in queries for a in ("-q", q)]
    done = ltrr("run", str(spec), *args, "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    decisions = [json.loads(line) for line in done.stdout.splitlines()]
    # a test that did not ask for a dropped arm fails loudly when one was dropped
    assert all(d["trace"] == [] and d["dropped"] == {} for d in decisions), decisions
    assert "dropped" not in done.stderr, done.stderr
    return decisions


def test_ranked_artists_for_exact_and_misspelled_names(spec):
    exact, misspelled, tag = run_jsonl(spec, "britney spears", "metalica", "death metal")
    assert exact["results"][0]["id"] == "289"            # Britney Spears
    assert {"names", "lexical"} <= set(exact["results"][0]["arms"])
    assert misspelled["results"][0]["id"] == "707"        # Metallica, via the fuzzy slotter
    assert {"slot": "artist", "value": "Metallica"} in [
        {k: s[k] for k in ("slot", "value")} for s in misspelled["slots"]]
    assert len(tag["results"]) == 10
    assert any(s["slot"] == "tag" and s["value"] == "death metal" for s in tag["slots"])


def test_table_output_is_readable(spec):
    done = ltrr("run", str(spec), "-q", "lady gaga")
    assert done.returncode == 0, done.stderr
    assert "Lady Gaga" in done.stdout and "found by" in done.stdout


def test_lucene_syntax_in_queries_is_plain_text(spec):
    star, syntax, words = run_jsonl(spec, "*:*", "radiohead OR *:*", "radiohead")
    # parsed as Lucene syntax, "*:*" would match every artist; as text it matches none
    # (other arms, e.g. the dense one, may still propose something)
    assert not any("lexical" in r["arms"] for r in star["results"])

    def lexical(d):
        return [(r["id"], r["arms"]["lexical"]) for r in d["results"] if "lexical" in r["arms"]]

    assert lexical(syntax) == lexical(words) != []


def test_queries_file_trec_output_and_decision_log(spec, tmp_path):
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\tradiohead\nq2\tdepeche mode\n")
    out = tmp_path / "run.trec"
    done = ltrr("run", str(spec), "--queries", str(queries), "--format", "trec", "-o", str(out))
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert lines[0].split()[:4] == ["q1", "Q0", lines[0].split()[2], "1"]
    assert {line.split()[0] for line in lines} == {"q1", "q2"}
    log = pl.read_parquet(spec.parent / "state/decisions/*.parquet")
    assert {"q1", "q2"} <= set(log["request_id"].to_list())
    row = log.filter(pl.col("request_id") == "q1").row(0, named=True)
    assert row["ranking"][0]["entity_id"] == lines[0].split()[2]


def test_bad_query_file_names_the_line(spec, tmp_path):
    bad = tmp_path / "q.tsv"
    bad.write_text("q1\tfine\nno tab here\n")
    done = ltrr("run", str(spec), "--queries", str(bad))
    assert done.returncode == 1
    assert f"{bad}:2" in done.stderr and "Traceback" not in done.stderr


def test_index_is_idempotent_and_stale_or_missing_indexes_are_reported(spec, tmp_path):
    again = ltrr("index", str(spec))
    assert again.returncode == 0 and "up to date" in again.stderr

    data = yaml.safe_load(spec.read_text())
    data["arms"][1]["with"]["k1"] = 1.2                    # query-time param: still current
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump(data, sort_keys=False))
    assert ltrr("run", str(tuned), "-q", "x").returncode == 0

    data["arms"][1]["with"]["fields"] = {"name": 1.0}      # indexed fields changed → stale
    stale = tmp_path / "stale.yaml"
    stale.write_text(yaml.safe_dump(data, sort_keys=False))
    done = ltrr("run", str(stale), "-q", "x")
    assert done.returncode == 1
    assert "node 'lexical'" in done.stderr and "stale" in done.stderr
    assert f"ltrr index {stale}" in done.stderr

    data["state_dir"] = str(tmp_path / "empty-state")       # never indexed → missing
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump(data, sort_keys=False))
    done = ltrr("run", str(missing), "-q", "x")
    assert done.returncode == 1 and "no index built yet" in done.stderr


def test_graph_prints_mermaid_and_draws_png(spec, tmp_path):
    png = tmp_path / "plan.png"
    done = ltrr("graph", str(spec), "--png", str(png))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("flowchart LR")
    assert "understand -->|Slots| names" in done.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plugins_lists_builtins_with_package():
    done = ltrr("plugins")
    assert done.returncode == 0
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["arm", "bm25", "ltrr"] in [r[:3] for r in rows]
    assert ["slotter", "dictionary", "ltrr"] in [r[:3] for r in rows]


# --- no arm lost to a cold start; a dropped arm is loud ------------------------------------

def burners(n: int = 2) -> list[subprocess.Popen]:
    """Processes that burn a core each until stopped."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_offline_run_on_a_cold_pipeline_never_drops_the_lexical_arm_under_load(spec):
    """Each run starts a cold JVM beside two CPU burners (a loaded 2-core machine);
    offline, the lexical arm still answers every query (its 200 ms deadline is for
    serving)."""
    queries = ["britney spears", "french hip hop"]     # a name; tags (each run ~9 s)
    hogs = burners(2)
    try:
        runs = [ltrr("run", str(spec), "-q", q, "--format", "jsonl", "--no-log")
                for q in queries]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    for q, done in zip(queries, runs):
        assert done.returncode == 0, done.stderr
        (d,) = [json.loads(line) for line in done.stdout.splitlines()]
        assert d["query"] == q
        assert d["trace"] == [] and d["dropped"] == {}, (q, d["trace"], d["timings_ms"])
        assert "dropped" not in done.stderr, done.stderr
        assert any("lexical" in r["arms"] for r in d["results"]), (q, d["results"])


SLOW_PLUGIN = """
import time

from ltrr.components import Arm
from ltrr.hookspecs import hookimpl
from ltrr.types import Candidate


class NapArm(Arm):
    \"\"\"Sleeps 0.3 s, then answers the first catalog id (test only).\"\"\"

    name = "nap"

    def retrieve_batch(self, requests):
        time.sleep(0.3)
        return [[Candidate(self.ctx.catalog.ids[0], self.ctx.node_id, 1, 1.0)]
                for _ in requests]


class BoomArm(Arm):
    \"\"\"Always raises (test only).\"\"\"

    name = "boom"

    def retrieve_batch(self, requests):
        raise ValueError("index exploded")


@hookimpl
def ltrr_components():
    return [NapArm, BoomArm]
"""


@pytest.fixture
def slow_plugin(tmp_path) -> dict:
    """A test-only plugin distribution (arms ``nap`` and ``boom``) on PYTHONPATH, found
    through its entry point like an installed package; returns the environment."""
    site = tmp_path / "site"
    info = site / "ltrr_test_slow-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "ltrr_test_slow.py").write_text(SLOW_PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ltrr-test-slow\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ltrr]\ntest_slow = ltrr_test_slow\n")
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path}


def test_a_dropped_arm_is_reported_on_stderr_counted_and_fails_with_strict(slow_plugin, tmp_path):
    import polars as pl

    pl.DataFrame({"id": ["a", "b"], "name": ["x", "y"]}).write_parquet(tmp_path / "c.parquet")
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ncatalog: {path: c.parquet}\n"
                    "arms:\n  - {id: sleepy, use: nap, deadline_ms: 1}\n"
                    "policy: {budget: 5}\noutput: {k: 2}\n")
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\tfirst\nq2\tsecond\n")
    base = ["run", str(spec), "--queries", str(queries), "--format", "jsonl", "--no-log"]

    offline = ltrr(*base, "--strict", env=slow_plugin)    # offline: no deadlines, waited for
    assert offline.returncode == 0, offline.stderr
    assert [json.loads(x)["results"][0]["id"] for x in offline.stdout.splitlines()] == ["a", "a"]
    assert "dropped" not in offline.stderr

    served = ltrr(*base, "--deadlines", env=slow_plugin)  # the spec's deadlines, as served
    assert served.returncode == 0, served.stderr
    out = [json.loads(x) for x in served.stdout.splitlines()]
    assert [d["dropped"] for d in out] == [{"sleepy": "deadline"}] * 2
    assert all(d["results"] == [] for d in out)
    lines = served.stderr.splitlines()
    for rid in ("q1", "q2"):                              # one line per dropped arm and query
        assert [x for x in lines if f"request {rid}" in x and "'sleepy'" in x
                and "deadline" in x], served.stderr
    assert "2 of 2 queries lost an arm" in served.stderr and "sleepy: 2" in served.stderr

    strict = ltrr(*base, "--deadlines", "--strict", env=slow_plugin)
    assert strict.returncode == 1
    assert strict.stdout.count("\n") == 2                 # the answers are still written
    assert "error: " in strict.stderr and "--strict" in strict.stderr
    assert "Traceback" not in strict.stderr

    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q1\t0\ta\t1\nq2\t0\tb\t1\n")
    spec.write_text(spec.read_text().replace("use: nap, deadline_ms: 1", "use: boom"))
    evaluated = ltrr("evaluate", str(spec), "--queries", str(queries), "--qrels", str(qrels),
                     "--json", env=slow_plugin)           # a failure drops offline too
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["dropped_arms"] == {"sleepy": 2}
    assert "request q1" in evaluated.stderr and "index exploded" in evaluated.stderr
    failed = ltrr("evaluate", str(spec), "--queries", str(queries), "--qrels", str(qrels),
                  "--strict", env=slow_plugin)
    assert failed.returncode == 1 and "--strict" in failed.stderr
