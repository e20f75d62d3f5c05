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
