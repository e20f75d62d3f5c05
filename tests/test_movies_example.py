"""examples/movies: what build.py makes from raw/ is what the repository holds, titles are
split as people say them, and the judged queries resolve to one movie each."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

FOLDER = Path(__file__).resolve().parents[1] / "examples" / "movies"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("movies_build", FOLDER / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("raw,title,akas,year", [
    ("Toy Story (1995)", "Toy Story", [], "1995"),
    ("Godfather, The (1972)", "The Godfather", [], "1972"),
    ("Seven (a.k.a. Se7en) (1995)", "Seven", ["Se7en"], "1995"),
    ("City of Lost Children, The (Cité des enfants perdus, La) (1995)",
     "The City of Lost Children", ["La Cité des enfants perdus"], "1995"),
    ("Avventura, L' (Adventure, The) (1960)", "L'Avventura", ["The Adventure"], "1960"),
    ("Babylon 5", "Babylon 5", [], None),
    ("Fawlty Towers (1975-1979)", "Fawlty Towers", [], "1975"),
    ("Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1964)",
     "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb", [], "1964"),
])
def test_titles_are_split_as_people_say_them(build, raw, title, akas, year):
    assert build.split_title(raw) == (title, akas, year)


def test_the_committed_files_are_what_build_makes(build):
    catalog = build.movies()
    held = pl.read_parquet(FOLDER / "movies.parquet")
    assert catalog.equals(held), "run python examples/movies/build.py"
    assert catalog.height == 9742 and catalog["movie_id"].n_unique() == 9742
    queries, qrels = build.judged(catalog)
    assert [json.loads(line) for line in
            (FOLDER / "queries.jsonl").read_text().splitlines()] == queries
    assert (FOLDER / "qrels.txt").read_text().splitlines() == qrels
    types = {q["type"] for q in queries}
    assert len(queries) >= 40 and types == {"exact", "misspelled", "partial", "attribute",
                                            "like", "descriptive"}
    judged = {line.split()[0] for line in qrels}
    assert judged == {q["id"] for q in queries}           # every query has a judgement
    mixed, members = build.collections(catalog)
    assert mixed.equals(pl.read_parquet(FOLDER / "movies_mixed.parquet"))
    assert members.equals(pl.read_parquet(FOLDER / "collection_members.parquet"))


def test_collections_are_genres_and_common_tags_holding_their_movies(build):
    catalog = pl.read_parquet(FOLDER / "movies.parquet")
    mixed = pl.read_parquet(FOLDER / "movies_mixed.parquet")
    members = pl.read_parquet(FOLDER / "collection_members.parquet")
    kinds = dict(zip(mixed["movie_id"], mixed["kind"]))
    assert mixed["movie_id"].n_unique() == mixed.height
    assert sum(k == "movie" for k in kinds.values()) == catalog.height
    comedies = set(members.filter(pl.col("collection_id") == "collection:genre:comedy")
                   ["movie_id"])
    assert comedies == set(catalog.filter(pl.col("genres").list.contains("Comedy"))
                           ["movie_id"])
    size = members.group_by("collection_id").len()
    assert size["len"].min() >= build.MIN_COLLECTION
    assert "collection:tag:comedy" not in kinds       # a tag repeating a genre
    assert "collection:tag:in-netflix-queue" not in kinds
    row = mixed.row(by_predicate=pl.col("movie_id") == "collection:tag:stephen-king",
                    named=True)
    assert row["title"] == "Stephen king movies" and row["tags"] == ["stephen king"]


@pytest.fixture(scope="module")
def mixed_plan():
    from ltrr.compiler import load_plan
    from ltrr.runtime.batch import index_plan

    plan = load_plan(FOLDER / "movies-mixed.yaml")
    index_plan(plan)
    return plan


def test_the_mixed_movies_spec_finds_movies_their_collections_and_asked_collections(
        mixed_plan):
    from ltrr.runtime.pipeline import Pipeline
    from ltrr.types import Query

    with Pipeline(mixed_plan, log_decisions=False) as pipe:
        toy, king = pipe.run_batch([Query("1", "toy story"),
                                    Query("2", "stephen king collection")])
    members = pl.read_parquet(FOLDER / "collection_members.parquet")
    of_toy_story = set(members.filter(pl.col("movie_id") == "1")["collection_id"])
    assert toy.ranking[0].entity_id == "1" and toy.ranking[0].entity_type == "movie"
    related = [c.entity_id for c in toy.candidates["related"]]
    assert related and set(related[:3]) <= of_toy_story     # a movie → its collections
    assert ("type", "collection") in {(s.name, s.value) for s in king.slots}
    assert king.ranking[0].entity_id == "collection:tag:stephen-king"
    for d in (toy, king):
        assert sum(r.entity_type == "collection" for r in d.ranking) <= 3   # the quota


def test_a_title_that_names_no_movie_stops_the_build_with_its_line(tmp_path):
    folder = tmp_path / "movies"
    folder.mkdir()
    (folder / "build.py").write_text((FOLDER / "build.py").read_text())
    (folder / "raw").symlink_to(FOLDER / "raw")
    (folder / "judged.yaml").write_text(
        "- {id: a, type: exact, query: heat, relevant: {Heat (1995): 2}}\n"
        "- {id: b, type: exact, query: x, relevant: {Heat (1996): 2}}\n")
    done = subprocess.run([sys.executable, str(folder / "build.py")], capture_output=True,
                          text=True)
    assert done.returncode == 1
    assert "judged.yaml:2: query b: 'Heat (1996)' names 0 movies" in done.stderr, done.stderr
