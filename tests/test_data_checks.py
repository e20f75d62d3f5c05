"""Data checks at validate time (issue 13): every file a spec names exists, reads and has
the columns its nodes read, of a usable type — found from schemas alone, each problem a
located error, never a traceback; relation files in any table format; index
fingerprints that follow file content, not paths as written."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from ltrr.compiler import load_plan
from ltrr.errors import DataError

LTRR = str(Path(sys.executable).with_name("ltrr"))

CATALOG = pl.DataFrame({
    "movie_id": [1, 2, 3, 4],
    "title": ["Heat", "Toy Story", "Toy Story 2", "The Matrix"],
    "genres": [["crime", "thriller"], ["animation", "comedy"], ["animation", "comedy"],
               ["action", "sci-fi"]],
    "overview": ["a heist", "toys alive", "toys again", "a simulation"],
    "votes": [10.0, 30.0, 20.0, 40.0],
})
TAGS = pl.DataFrame({"movie_id": [1, 1, 2, 3, 4, 4], "tag": ["heist", "la", "pixar", "pixar",
                                                              "cyberpunk", "la"]})
RATINGS = pl.DataFrame({"user": ["a", "a", "b", "b", "c"], "movie_id": [1, 4, 2, 3, 2],
                        "rating": [4.0, 5.0, 3.5, 4.0, 5.0]})


def _spec(folder: Path, catalog: str = "movies.parquet", **override) -> Path:
    """A spec using every column-reading node kind but dense (no model load)."""
    p = {"id": "movie_id", "title": "title", "slot_column": "genres", "fields":
         "{title: 2.0, overview: 1.0}", "prior": "votes", "popularity": "votes",
         "memory_name": "title", "tags": "tags.parquet", "tag_attribute": "tag",
         "ratings": "ratings.parquet", "group": "user", "value": "rating", **override}
    text = f"""\
version: 1
name: movies
catalog: {{path: {catalog}, id: {p['id']}, title: {p['title']}}}
slotters:
  - id: understand
    use: dictionary
    with:
      slots:
        genre: {{column: {p['slot_column']}}}
arms:
  - id: lexical
    use: bm25
    with:
      fields: {p['fields']}
      prior: {{column: {p['prior']}}}
  - id: memory
    use: memory
    with:
      name: {{column: {p['memory_name']}}}
      popularity: {p['popularity']}
  - id: related
    use: graph
    from: [understand]
    with:
      relations:
        - {{kind: bipartite, path: {p['tags']}, entity: movie_id,
           attribute: {p['tag_attribute']}}}
        - {{kind: co_occurrence, path: {p['ratings']}, group: {p['group']},
           entity: movie_id, value: {p['value']}}}
policy:
  use: static
  budget: 30
  with: {{allocation: {{lexical: 10, memory: 10, related: 10}}}}
"""
    path = folder / "movies.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    CATALOG.write_parquet(tmp_path / "movies.parquet")
    TAGS.write_parquet(tmp_path / "tags.parquet")
    RATINGS.write_parquet(tmp_path / "ratings.parquet")
    return tmp_path


def _problems(spec: Path) -> list[str]:
    with pytest.raises(DataError) as info:
        load_plan(spec)
    return [e.render() for e in [info.value, *info.value.also]]


def test_a_spec_whose_data_is_right_validates(data):
    plan = load_plan(_spec(data))
    assert [a.id for a in plan.arms] == ["lexical", "memory", "related"]


def test_a_missing_catalog_is_located_by_validate_index_and_run_without_a_traceback(data):
    spec = _spec(data, catalog="movis.parquet")
    (message,) = _problems(spec)
    assert message.startswith(f"{spec}:3:17: node 'catalog' field 'path': catalog file "
                              "not found"), message
    for command in (["validate"], ["index"], ["run", "-q", "heat"]):
        out = subprocess.run([LTRR, *command, str(spec)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 1, (command, out.stderr)
        assert f"{spec}:3:17:" in out.stderr and "not found" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr, out.stderr


def test_every_wrong_column_is_named_at_once_with_the_columns_there_are(data):
    spec = _spec(data, id="movieid", slot_column="genre", fields="{title: 2.0, plot: 1.0}",
                 memory_name="name", tag_attribute="tags", group="users")
    found = _problems(spec)
    assert len(found) == 6, found
    expected = [  # (line:col, node and field, the column, a hint)
        ("3:37", "field 'id'", "'movieid'", "did you mean 'movie_id'?"),
        ("9:25", "node 'understand' field 'with.slots.genre.column'", "'genre'",
         "did you mean 'genres'?"),
        ("14:28", "node 'lexical' field 'with.fields.plot'", "'plot'",
         "movies.parquet has: movie_id, title, genres, overview, votes"),
        ("19:22", "node 'memory' field 'with.name.column'", "'name'", "movies.parquet has:"),
        ("27:23", "node 'related' field 'with.relations.0.attribute'", "'tags'",
         "did you mean 'tag'?"),
        ("28:63", "node 'related' field 'with.relations.1.group'", "'users'",
         "did you mean 'user'?"),
    ]
    for message, (where, field, column, hint) in zip(found, expected):
        assert message.startswith(f"{spec}:{where}: "), message
        assert field in message and f"has no column {column}" in message and hint in message


def test_a_column_of_the_wrong_type_names_the_columns_that_fit(data):
    found = _problems(_spec(data, prior="title", value="user", popularity="genres"))
    assert len(found) == 3, found
    assert "field 'with.prior.column': column 'title' of catalog movies.parquet holds " \
           "String, not numeric values (hint: columns of numeric values: movie_id, votes)" in found[0]
    assert "field 'with.popularity': column 'genres'" in found[1]
    assert "field 'with.relations.1.value': column 'user' of relation file ratings.parquet " \
           "holds String, not numeric values (hint: columns of numeric values: movie_id, rating)" in found[2]


def test_an_unreadable_or_unnamed_format_is_located(data):
    (data / "movies.dat").write_text("movie_id::title\n1::Heat\n")
    (message,) = _problems(_spec(data, catalog="movies.dat"))
    assert "field 'path': cannot tell the format of the catalog file movies.dat" in message
    assert "name it .parquet, .csv, .tsv or .jsonl" in message
    (data / "broken.parquet").write_bytes(b"PAR1 not really")
    (message,) = _problems(_spec(data, tags="broken.parquet"))
    assert "field 'with.relations.0.path': cannot read the relation file broken.parquet " \
           "as parquet" in message


@pytest.mark.parametrize("name", ["movies.csv", "movies.csv.gz", "movies.tsv", "movies.jsonl"])
def test_catalogs_and_relations_in_text_formats_are_checked_the_same(data, name):
    flat = CATALOG.with_columns(pl.col("genres").list.join("|"))
    if name.startswith("movies.csv"):
        raw = flat.write_csv().encode()
        (data / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    elif name.endswith(".tsv"):
        flat.write_csv(data / name, separator="\t")
    else:
        CATALOG.write_ndjson(data / name)
    TAGS.write_csv(data / "tags.csv")
    assert load_plan(_spec(data, catalog=name, tags="tags.csv"))
    found = _problems(_spec(data, catalog=name, tags="tags.csv", prior="overview",
                            tag_attribute="label"))
    assert len(found) == 2, found
    assert f"column 'overview' of catalog {name} holds String, not numeric values" in found[0]
    assert "relation file tags.csv has no column 'label' (hint: tags.csv has: movie_id, " \
           "tag)" in found[1]


def test_the_graph_reads_csv_relations_as_it_reads_parquet_and_a_copy_stays_fresh(data):
    """The same relations as CSV build the same graph; and a copy of the spec with its data
    in another folder (relation paths written differently) keeps its index: fingerprints
    follow what the files hold, not where the spec says they are."""
    for name, frame in (("tags", TAGS), ("ratings", RATINGS)):
        frame.write_csv(data / f"{name}.csv")
    runs = {}
    for kind in ("parquet", "csv"):
        folder = data / kind
        folder.mkdir()
        for f in ("movies.parquet", f"tags.{kind}", f"ratings.{kind}"):
            shutil.copy(data / f, folder / f)
        spec = _spec(folder, tags=f"tags.{kind}", ratings=f"ratings.{kind}")
        subprocess.run([LTRR, "index", str(spec)], check=True, capture_output=True,
                       timeout=300)
        out = subprocess.run([LTRR, "run", str(spec), "-q", "heat", "--format", "jsonl"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        runs[kind] = _ranking(out.stdout)
    assert runs["csv"] == runs["parquet"] and runs["csv"], runs
    moved = data / "elsewhere" / "deeper"
    moved.mkdir(parents=True)
    spec = _spec(moved, catalog="../../parquet/movies.parquet",
                 tags=str(data / "parquet" / "tags.parquet"),
                 ratings="../../parquet/ratings.parquet")
    text = spec.read_text().replace("name: movies", f"name: movies\nstate_dir: "
                                    f"{data / 'parquet' / '.ltrr' / 'movies'}")
    spec.write_text(text)
    out = subprocess.run([LTRR, "run", str(spec), "-q", "heat", "--format", "jsonl"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr        # not stale: no `ltrr index` needed
    assert _ranking(out.stdout) == runs["parquet"]


def _ranking(jsonl: str) -> list[tuple[str, dict]]:
    (decision,) = [json.loads(line) for line in jsonl.splitlines()]
    return [(r["id"], r["arms"]) for r in decision["results"]]


def test_catalog_lists_are_checked_and_seen_split(data):
    """`catalog.lists` splits text columns of joined values; nodes see lists."""
    flat = CATALOG.with_columns(pl.col("genres").list.join("|"))
    flat.write_csv(data / "flat.csv")
    spec = _spec(data, catalog="flat.csv")
    text = spec.read_text().replace("title: title}", "title: title, lists: {genres: '|'}}")
    spec.write_text(text)
    assert load_plan(spec).model.catalog.lists == {"genres": "|"}
    spec.write_text(text.replace("lists: {genres:", "lists: {genre:"))
    (message,) = _problems(spec)
    assert "field 'lists.genre': catalog flat.csv has no column 'genre'" in message
    spec.write_text(text.replace("lists: {genres:", "lists: {votes:"))
    (message,) = _problems(spec)          # reported once, not again by every reader
    assert "column 'votes' of catalog flat.csv holds Float64, not text" in message
