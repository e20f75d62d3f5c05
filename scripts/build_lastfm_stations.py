"""Build the mixed music catalog: the Last.fm artists plus tag *stations*.

A tag carried (among the top tags) by at least ``--min-artists`` artists becomes a
playable station: id ``station:<tag slug>``, name ``<tag> radio``, its tags the tag and
the tags most often carried with it by its artists, its ``plays`` the summed plays of its
artists and ``listeners`` the users who played any of them. ``popularity`` is
``log1p(plays) / max(log1p(plays))`` over the whole mixed catalog. Artists keep their ids
(``kind`` = artist); stations have ``kind`` = station.

Reads ``examples/data/lastfm/{artists,plays}.parquet``, writes
``examples/data/lastfm/music_mixed.parquet`` (deterministic: same bytes on re-run with
the same polars version)::

    .venv/bin/python scripts/build_lastfm_stations.py [--min-artists 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import polars as pl

FOLDER = Path(__file__).resolve().parents[1] / "examples" / "data" / "lastfm"
COLUMNS = ["entity_id", "kind", "name", "tags", "tag_text", "listeners", "plays", "popularity"]
CO_TAGS = 4          # tags of a station besides its own


def slug(tag: str) -> str:
    return re.sub(r"[^0-9a-z]+", "-", tag.lower()).strip("-") or "tag"


def stations(artists: pl.DataFrame, plays: pl.DataFrame, min_artists: int) -> pl.DataFrame:
    """One row per tag with at least ``min_artists`` artists (ids unique, sorted by tag)."""
    pairs = (artists.select("artist_id", "tags", "plays").explode("tags")
             .drop_nulls("tags").rename({"tags": "tag"}))
    counts = pairs.group_by("tag").agg(pl.len().alias("n"), pl.col("plays").sum())
    chosen = counts.filter(pl.col("n") >= min_artists).sort("tag")
    members = pairs.join(chosen.select("tag"), on="tag", how="semi")
    # co-carried tags: among the station's artists, the other tags most of them carry
    co = (members.select("tag", "artist_id")
          .join(pairs.select("artist_id", pl.col("tag").alias("other")), on="artist_id")
          .filter(pl.col("other") != pl.col("tag"))
          .group_by("tag", "other").len("n")
          .sort(["tag", "n", "other"], descending=[False, True, False])
          .group_by("tag", maintain_order=True).head(CO_TAGS)
          .group_by("tag", maintain_order=True).agg(pl.col("other").alias("co")))
    listeners = (plays.join(members.select("tag", "artist_id"), on="artist_id")
                 .group_by("tag").agg(pl.col("user_id").n_unique().alias("listeners")))
    out = (chosen.join(co, on="tag", how="left").join(listeners, on="tag", how="left")
           .sort("tag"))
    ids, seen = [], set()
    for tag in out["tag"].to_list():
        base = f"station:{slug(tag)}"
        sid, n = base, 2
        while sid in seen:
            sid, n = f"{base}-{n}", n + 1
        seen.add(sid)
        ids.append(sid)
    return out.select(
        pl.Series("entity_id", ids),
        pl.lit("station").alias("kind"),
        (pl.col("tag") + " radio").alias("name"),
        pl.concat_list([pl.col("tag"), pl.col("co").fill_null([])]).alias("tags"),
        pl.col("listeners").fill_null(0).cast(pl.Int64),
        pl.col("plays").cast(pl.Int64),
    ).with_columns(pl.col("tags").list.join(", ").alias("tag_text"))


def build(folder: Path, min_artists: int) -> pl.DataFrame:
    artists = pl.read_parquet(folder / "artists.parquet")
    plays = pl.read_parquet(folder / "plays.parquet")
    both = pl.concat([
        artists.select(pl.col("artist_id").alias("entity_id"), pl.lit("artist").alias("kind"),
                       "name", "tags", "tag_text", "listeners", "plays"),
        stations(artists, plays, min_artists).select(
            "entity_id", "kind", "name", "tags", "tag_text", "listeners", "plays"),
    ])
    scale = pl.col("plays").log1p()
    return both.with_columns((scale / scale.max()).alias("popularity")).select(COLUMNS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--min-artists", type=int, default=30)
    p.add_argument("--out", type=Path, default=FOLDER / "music_mixed.parquet")
    args = p.parse_args()
    frame = build(FOLDER, args.min_artists)
    frame.write_parquet(args.out, compression="zstd", statistics=False)
    kinds = frame["kind"].value_counts().sort("kind")
    print(f"{args.out}: {frame.height} entities "
          + ", ".join(f"{k} {n}" for k, n in kinds.iter_rows()))


if __name__ == "__main__":
    main()
