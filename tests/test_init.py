"""``ltrr init`` (issue 13, item 3): from a CSV of items (and one of interactions) to ranked
results in three commands, with a spec that says why it is what it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from ltrr.compiler import load_plan
from ltrr.init_spec import catalog_roles

LTRR = str(Path(sys.executable).with_name("ltrr"))

MOVIES = pl.DataFrame({
    "movieId": list(range(1, 41)),
    "title": [f"{w} {i}" for i, w in enumerate(
        ["Heat", "Toy Story", "The Matrix", "Alien", "Casino", "Fargo", "Seven", "Clerks"] * 5)],
    "genres": ["Action|Crime|Thriller", "Adventure|Animation|Children", "Action|Sci-Fi",
               "Horror|Sci-Fi", "Crime|Drama", "Comedy|Crime", "Mystery|Thriller",
               "Comedy"] * 5,
    "overview": ["A long description of what happens in this film, with many words."] * 40,
    "votes": [float(v) for v in range(100, 140)],
})
RATINGS = pl.DataFrame({"userId": [u for u in range(1, 21) for _ in range(4)],
                        "movieId": [(u * 7 + k * 3) % 40 + 1 for u in range(1, 21)
                                    for k in range(4)],
                        "rating": [4.0, 3.5, 5.0, 2.0] * 20,
                        "timestamp": [964982703 + i for i in range(80)]})


def test_column_roles_come_from_values():
    roles = catalog_roles(MOVIES)
    assert roles.id == "movieId" and roles.title == "title"
    assert roles.lists == {"genres": "|"} and roles.attributes == ["genres"]
    assert roles.descriptions == ["overview"] and roles.prior == "votes" and roles.prior_log


def _ltrr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LTRR, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_init_index_run_on_a_csv_with_interactions(tmp_path):
    MOVIES.write_csv(tmp_path / "movies.csv")
    RATINGS.write_csv(tmp_path / "ratings.csv")
    out = _ltrr("init", "movies.csv", "--interactions", "ratings.csv", "--out", "movies.yaml",
                cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    spec = tmp_path / "movies.yaml"
    text = spec.read_text()
    assert "# " in text and "lists: {genres: '|'}" in text, text   # commented, lists split
    data = yaml.safe_load(text)
    arms = {a["id"]: a for a in data["arms"]}
    assert set(arms) == {"names", "lexical", "memory", "related"}
    assert arms["lexical"]["with"]["fields"] == {"title": 3.0, "overview": 1.0, "genres": 1.0}
    kinds = [r["kind"] for r in arms["related"]["with"]["relations"]]
    assert kinds == ["bipartite", "co_occurrence"]
    plan = load_plan(spec)
    assert [a.id for a in plan.arms][0] == "names"
    assert "ltrr index movies.yaml" in out.stdout            # the next steps
    assert _ltrr("index", "movies.yaml", cwd=tmp_path).returncode == 0
    run = _ltrr("run", "movies.yaml", "-q", "toy story 1", "-q", "crime", "--format", "jsonl",
                cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    exact, genre = (json.loads(line) for line in run.stdout.splitlines())
    assert exact["results"][0]["id"] == "2", exact                 # "Toy Story 1"
    assert {"slot": "genres", "value": "Crime", "score": 1.0} in genre["slots"]
    crime = set(MOVIES.filter(pl.col("genres").str.contains("Crime"))["movieId"].cast(str))
    assert {r["id"] for r in genre["results"][:5]} <= crime


def test_init_refuses_to_overwrite_and_names_bad_input(tmp_path):
    MOVIES.write_csv(tmp_path / "movies.csv")
    (tmp_path / "movies.yaml").write_text("name: mine\n")
    out = _ltrr("init", "movies.csv", "--out", "movies.yaml", cwd=tmp_path)
    assert out.returncode == 1 and "already exists" in out.stderr and "--force" in out.stderr
    assert (tmp_path / "movies.yaml").read_text() == "name: mine\n"
    out = _ltrr("init", "nope.csv", cwd=tmp_path)
    assert out.returncode == 1 and "not found" in out.stderr and "Traceback" not in out.stderr
    pl.DataFrame({"a": [1, 1], "b": ["x", "x"]}).write_csv(tmp_path / "dup.csv")
    out = _ltrr("init", "dup.csv", cwd=tmp_path)
    assert out.returncode == 1 and "id" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("name", ["items.parquet", "items.jsonl"])
def test_init_reads_every_table_format(tmp_path, name):
    frame = MOVIES.with_columns(pl.col("genres").str.split("|"))
    (frame.write_parquet if name.endswith("parquet") else frame.write_ndjson)(tmp_path / name)
    out = _ltrr("init", name, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    spec = tmp_path / "items.yaml"
    assert "lists:" not in spec.read_text()          # already lists
    assert load_plan(spec).model.catalog.title == "title"
