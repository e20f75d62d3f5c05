"""Build the movies example from the MovieLens files in raw/ (run from anywhere):

    python examples/movies/build.py

Writes, beside this script:

* ``movies.parquet`` — one row per movie: ``movie_id``, ``title`` (as people say it:
  "The Godfather", not "Godfather, The (1972)"), ``aka`` (alternative titles from the
  parentheses: "Se7en", "Le Fabuleux destin d'Amélie Poulain"), ``year`` and ``decade``
  (text: "1972", "1970s"), ``genres`` (list), ``tags`` (list: the users' free-text tags,
  lowercased, most used first), ``ratings`` (how many) and ``mean_rating``.
* ``movies_mixed.parquet`` and ``collection_members.parquet`` — the movies plus a
  *collection* entity per genre and per users' tag carried by at least
  ``MIN_COLLECTION`` movies (a tag that repeats a genre is not one) (``kind``: movie or collection; a collection's id is
  ``collection:genre:<slug>`` or ``collection:tag:<slug>``, its title "Comedy movies",
  its ratings those of its movies summed), and which movies each collection holds
  (``collection_id``, ``movie_id``, ``ratings``): the typed example
  ``movies-mixed.yaml``.
* ``queries.jsonl`` and ``qrels.txt`` — the judged queries of ``judged.yaml`` (written by
  hand, movies named by title and year) with their ids resolved; a title that does not
  resolve to exactly one movie stops the build with its line.

The ratings stay as they come (``raw/ratings.csv.gz``: userId, movieId, rating,
timestamp): the spec's co-occurrence relation and ``ltrr simulate --user-model
interactions`` read them there. Only polars and pyyaml are needed (ltrr dependencies).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import polars as pl
import yaml

HERE = Path(__file__).resolve().parent
RAW = HERE / "raw"

#: "Title (1995)", "Title (2007-2013)": the year in the last parentheses.
_YEAR = re.compile(r"^(?P<rest>.*?)\s*\((?P<year>\d{4})(?:[-–]\d{0,4})?\)\s*$")
#: One trailing parenthesised alternative title: "Seven (a.k.a. Se7en)".
_ALT = re.compile(r"^(?P<rest>.*\S)\s*\((?P<alt>[^()]+)\)\s*$")
#: An article MovieLens moves to the end: "Godfather, The", "Avventura, L'".
_ARTICLE = re.compile(r"^(?P<rest>.+), (?P<art>The|A|An|Les|Le|La|L'|Il|El|Die|Der|Das|Los|"
                      r"Las|Un|Une|Una|Lo|I|Det|Den|Ett|En|De|Het|O|Os|As)$")


def unarticle(title: str) -> str:
    """'Godfather, The' → 'The Godfather'; "Avventura, L'" → "L'Avventura"."""
    m = _ARTICLE.match(title.strip())
    if not m:
        return title.strip()
    art = m["art"]
    return f"{art}{m['rest']}" if art.endswith("'") else f"{art} {m['rest']}"


def split_title(raw: str) -> tuple[str, list[str], str | None]:
    """MovieLens' "Title, The (Alt, Le) (a.k.a. Other) (1995)" → (title, akas, year)."""
    rest, year = raw.strip(), None
    m = _YEAR.match(rest)
    if m:
        rest, year = m["rest"], m["year"]
    akas = []
    while (m := _ALT.match(rest)) and not rest.startswith("("):
        rest = m["rest"]
        alt = re.sub(r"^(a\.k\.a\.|aka)\s+", "", m["alt"].strip(), flags=re.I)
        akas.insert(0, unarticle(alt))
    return unarticle(rest), akas, year


def movies() -> pl.DataFrame:
    raw = pl.read_csv(RAW / "movies.csv.gz")
    parts = [split_title(t) for t in raw["title"]]
    tags = (pl.read_csv(RAW / "tags.csv.gz")
            .with_columns(tag=pl.col("tag").str.strip_chars().str.to_lowercase())
            .filter(pl.col("tag").str.len_chars() > 0)
            .group_by("movieId", "tag").agg(n=pl.len())
            .sort(["movieId", "n", "tag"], descending=[False, True, False])
            .group_by("movieId", maintain_order=True).agg(tags=pl.col("tag")))
    ratings = (pl.read_csv(RAW / "ratings.csv.gz").group_by("movieId")
               .agg(ratings=pl.len(), mean_rating=pl.col("rating").mean().round(3)))
    frame = pl.DataFrame({
        "movie_id": raw["movieId"].cast(pl.String),
        "title": [p[0] for p in parts],
        "aka": [p[1] for p in parts],
        "year": [p[2] for p in parts],
        "genres": [[] if g == "(no genres listed)" else g.split("|") for g in raw["genres"]],
    }, schema_overrides={"aka": pl.List(pl.String), "genres": pl.List(pl.String)})
    frame = frame.with_columns(
        decade=pl.when(pl.col("year").is_not_null())
        .then(pl.col("year").str.slice(0, 3) + "0s"))
    frame = (frame.join(tags.with_columns(pl.col("movieId").cast(pl.String)),
                        left_on="movie_id", right_on="movieId", how="left")
             .join(ratings.with_columns(pl.col("movieId").cast(pl.String)),
                   left_on="movie_id", right_on="movieId", how="left")
             .with_columns(tags=pl.col("tags").fill_null([]),
                           ratings=pl.col("ratings").fill_null(0)))
    return frame.select("movie_id", "title", "aka", "year", "decade", "genres", "tags",
                        "ratings", "mean_rating")


#: a tag carried by this many movies becomes a collection
MIN_COLLECTION = 10
#: tags that are someone's to-do list, not a topic
NOT_TOPICS = ("in netflix queue",)


def slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")


def collections(catalog: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the movies and collections as one typed catalog, the collections' members)."""
    movies = catalog.select("movie_id", "genres", "tags", "ratings")
    members = []
    for column, kind in (("genres", "genre"), ("tags", "tag")):
        pairs = (movies.explode(column).drop_nulls(column)
                 .filter(~pl.col(column).is_in(list(NOT_TOPICS)))
                 .select("movie_id", pl.col(column).alias("value"), "ratings"))
        keep = pairs.group_by("value").len().filter(pl.col("len") >= MIN_COLLECTION)
        members.append(pairs.join(keep.select("value"), on="value", how="semi")
                       .with_columns(kind=pl.lit(kind)))
    members = pl.concat(members).with_columns(
        slug=pl.col("value").map_elements(slug, return_dtype=pl.String))
    genres = members.filter(pl.col("kind") == "genre")["slug"].unique().implode()
    # a tag that repeats a genre ("comedy", "sci-fi") is that genre's collection
    members = members.filter((pl.col("kind") == "genre") | ~pl.col("slug").is_in(genres))
    members = members.with_columns(
        collection_id=pl.format("collection:{}:{}", "kind", "slug"))
    groups = (members.group_by("collection_id", "kind", "value")
              .agg(pl.col("ratings").sum().cast(pl.UInt32)).sort("collection_id"))
    rows = pl.DataFrame({
        "movie_id": groups["collection_id"],
        "title": [f"{v[:1].upper()}{v[1:]} movies" for v in groups["value"]],
        "aka": [[] for _ in range(groups.height)],
        "year": [None] * groups.height, "decade": [None] * groups.height,
        "genres": [[v] if k == "genre" else [] for k, v in groups.select("kind", "value")
                   .iter_rows()],
        "tags": [[v] if k == "tag" else [] for k, v in groups.select("kind", "value")
                 .iter_rows()],
        "ratings": groups["ratings"], "mean_rating": [None] * groups.height,
    }, schema=catalog.schema)
    mixed = pl.concat([catalog.with_columns(kind=pl.lit("movie")),
                       rows.with_columns(kind=pl.lit("collection"))])
    return mixed, members.select("collection_id", "movie_id", "ratings").sort(
        "collection_id", "movie_id")


def judged(catalog: pl.DataFrame) -> tuple[list[dict], list[str]]:
    """judged.yaml → query records and TREC qrels lines; stops on a title that does not
    name exactly one movie."""
    source = HERE / "judged.yaml"
    text = source.read_text(encoding="utf-8")
    entries = yaml.safe_load(text)
    keys: dict[str, list[str]] = {}
    for mid, title, year in catalog.select("movie_id", "title", "year").iter_rows():
        keys.setdefault(f"{title} ({year})".lower(), []).append(mid)
    lines = text.splitlines()
    queries, qrels, seen = [], [], set()
    for e in entries:
        qid = e["id"]
        if qid in seen:
            sys.exit(f"{source.name}: query id {qid} twice")
        seen.add(qid)
        queries.append({"id": qid, "query": e["query"], "type": e["type"]})
        for name, grade in e["relevant"].items():
            found = keys.get(name.lower(), [])
            if len(found) != 1:
                line = next((i for i, t in enumerate(lines, 1) if name in t), "?")
                sys.exit(f"{source.name}:{line}: query {qid}: '{name}' names "
                         f"{len(found)} movies (write it as 'Title (year)' as in "
                         "movies.parquet)")
            qrels.append(f"{qid} 0 {found[0]} {int(grade)}")
    return queries, qrels


def main() -> None:
    catalog = movies()
    catalog.write_parquet(HERE / "movies.parquet", statistics=False)
    mixed, members = collections(catalog)
    mixed.write_parquet(HERE / "movies_mixed.parquet", statistics=False)
    members.write_parquet(HERE / "collection_members.parquet", statistics=False)
    queries, qrels = judged(catalog)
    (HERE / "queries.jsonl").write_text(
        "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries), encoding="utf-8")
    (HERE / "qrels.txt").write_text("\n".join(qrels) + "\n")
    print(f"movies.parquet: {catalog.height} movies; movies_mixed.parquet: "
          f"{mixed.height - catalog.height} collections of {members.height} members; "
          f"{len(queries)} judged queries, {len(qrels)} judgements")


if __name__ == "__main__":
    main()
