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


def ltrr(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([LTRR, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def spec(music_spec) -> Path:
    """The default music pipeline, with its state in a temp folder, indexed once."""
    return music_spec


def run_jsonl(spec: Path, *queries: str) -> list[dict]:
    args = [a for q in queries for a in ("-q", q)]
    done = ltrr("run", str(spec), *args, "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


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
