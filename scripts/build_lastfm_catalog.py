"""Build the embedded default music catalog from HetRec 2011 Last.fm 2K.

Reads the raw GroupLens ``hetrec2011-lastfm-2k`` files (gzip-compressed TSV, one header row each)
and writes a small, deterministic set of zstd-compressed parquet files plus a ``SOURCE.md``:

- ``artists.parquet``: one row per artist (artist_id, name, tags, tag_text, listeners, plays,
  popularity), sorted by numeric artist id.
- ``plays.parquet``: raw user-artist play counts (user_id, artist_id, plays).
- ``tag_assignments.parquet``: raw user-artist tag assignments (user_id, artist_id, tag, year,
  month); the ``day`` column is dropped (it is almost always 1).
- ``friends.parquet``: undirected friendships, each pair once with user_id < friend_id.

Ids are kept as strings (``"289"``) but every file is sorted by their numeric value. Text is
normalised conservatively: HTML entities unescaped, whitespace stripped and internal runs of ASCII whitespace collapsed,
tags lowercased, and UTF-8 read as Latin-1 ("mojibake", e.g. ``BallakÃ©``) repaired when the
repair round-trips exactly.

Usage (from the repo root)::

    .venv/bin/python scripts/build_lastfm_catalog.py
    .venv/bin/python scripts/build_lastfm_catalog.py --raw DIR --out DIR
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import io
import re
from pathlib import Path

import polars as pl

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RAW = REPO_ROOT / ".." / "shared" / "data" / "hetrec2011-lastfm-2k"
DEFAULT_OUT = REPO_ROOT / "examples" / "data" / "lastfm"

MAX_TAGS = 10
RAW_FILES = (
    "artists.dat.gz",
    "tags.dat.gz",
    "user_artists.dat.gz",
    "user_taggedartists.dat.gz",
    "user_friends.dat.gz",
)
_WS = re.compile(r"[ \t\r\n]+")  # ASCII only: keep ideographic spaces (U+3000)
_LATIN1_LOOKALIKE = re.compile(r"[\u00c2-\u00f4]")


# ---------------------------------------------------------------- reading


def read_tsv(path: Path, encoding: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read a gzip TSV with a header row; no quoting (artist names contain literal quotes)."""
    text = gzip.decompress(path.read_bytes()).decode(encoding)
    return pl.read_csv(
        io.BytesIO(text.encode("utf-8")),
        separator="\t",
        quote_char=None,
        has_header=True,
        new_columns=list(schema),
        schema_overrides=schema,
    )


def clean_text(value: str) -> str:
    """Unescape HTML entities, repair Latin-1 mojibake, strip and collapse whitespace."""
    value = html.unescape(value)
    if _LATIN1_LOOKALIKE.search(value):
        try:
            repaired = value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            repaired = value
        value = repaired
    return _WS.sub(" ", value).strip()


def clean_column(df: pl.DataFrame, column: str, *, lower: bool = False) -> pl.DataFrame:
    values = [clean_text(v) for v in df[column].to_list()]
    if lower:
        values = [v.lower() for v in values]
    return df.with_columns(pl.Series(column, values, dtype=pl.String))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- building


def build(raw: Path) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """Return the output tables (name -> frame) and a few data-quality counters."""
    artists_raw = read_tsv(
        raw / "artists.dat.gz",
        "utf-8",
        {"artist": pl.Int64, "name": pl.String, "url": pl.String, "picture_url": pl.String},
    )
    tags = read_tsv(raw / "tags.dat.gz", "latin-1", {"tag_id": pl.Int64, "tag": pl.String})
    user_artists = read_tsv(
        raw / "user_artists.dat.gz",
        "utf-8",
        {"user": pl.Int64, "artist": pl.Int64, "plays": pl.Int64},
    )
    tagged = read_tsv(
        raw / "user_taggedartists.dat.gz",
        "utf-8",
        {
            "user": pl.Int64,
            "artist": pl.Int64,
            "tag_id": pl.Int64,
            "day": pl.Int64,
            "month": pl.Int64,
            "year": pl.Int64,
        },
    )
    friends_raw = read_tsv(
        raw / "user_friends.dat.gz", "utf-8", {"user": pl.Int64, "friend": pl.Int64}
    )

    raw_names = artists_raw["name"].to_list()
    artists_raw = clean_column(artists_raw, "name")
    tags = clean_column(tags, "tag", lower=True)
    stats = {
        "names_changed_by_cleaning": sum(
            a != b for a, b in zip(raw_names, artists_raw["name"].to_list())
        ),
    }

    # tag assignments with the normalised tag string
    assignments = tagged.join(tags, on="tag_id", how="left", validate="m:1")
    stats["assignments_unknown_tag"] = assignments["tag"].null_count()
    unknown_artist = assignments.filter(~pl.col("artist").is_in(artists_raw["artist"].implode()))
    stats["assignments_unknown_artist"] = unknown_artist.height
    stats["unknown_artist_ids"] = unknown_artist["artist"].n_unique()
    stats["assignments_duplicated_after_normalisation"] = int(
        assignments.select(pl.struct("user", "artist", "tag").is_duplicated().sum()).item()
    )

    # top tags per artist: distinct users per (artist, tag), ties broken by tag name
    top_tags = (
        assignments.drop_nulls("tag")
        .group_by("artist", "tag")
        .agg(pl.col("user").n_unique().alias("n_users"))
        .sort(["artist", "n_users", "tag"], descending=[False, True, False])
        .group_by("artist", maintain_order=True)
        .agg(pl.col("tag").head(MAX_TAGS).alias("tags"))
    )

    play_stats = user_artists.group_by("artist").agg(
        pl.col("user").n_unique().cast(pl.Int64).alias("listeners"),
        pl.col("plays").sum().alias("plays"),
    )

    log_plays = pl.col("plays").log1p()
    artists = (
        artists_raw.select("artist", "name")
        .join(top_tags, on="artist", how="left", validate="1:1")
        .join(play_stats, on="artist", how="left", validate="1:1")
        .with_columns(
            pl.col("tags").fill_null(pl.lit([], dtype=pl.List(pl.String))),
            pl.col("listeners").fill_null(0),
            pl.col("plays").fill_null(0),
        )
        .with_columns(
            pl.col("tags").list.join(", ").alias("tag_text"),
            (log_plays / log_plays.max()).fill_nan(0.0).alias("popularity"),
        )
        .sort("artist")
        .select(
            pl.col("artist").cast(pl.String).alias("artist_id"),
            "name",
            "tags",
            "tag_text",
            "listeners",
            "plays",
            "popularity",
        )
    )

    plays = user_artists.sort("user", "artist").select(
        pl.col("user").cast(pl.String).alias("user_id"),
        pl.col("artist").cast(pl.String).alias("artist_id"),
        "plays",
    )

    tag_assignments = (
        assignments.drop_nulls("tag")
        .sort("user", "artist", "year", "month", "day", "tag")
        .select(
            pl.col("user").cast(pl.String).alias("user_id"),
            pl.col("artist").cast(pl.String).alias("artist_id"),
            "tag",
            "year",
            "month",
        )
    )

    friends = (
        friends_raw.select(
            pl.min_horizontal("user", "friend").alias("user"),
            pl.max_horizontal("user", "friend").alias("friend"),
        )
        .filter(pl.col("user") != pl.col("friend"))
        .unique()
        .sort("user", "friend")
        .select(
            pl.col("user").cast(pl.String).alias("user_id"),
            pl.col("friend").cast(pl.String).alias("friend_id"),
        )
    )
    stats["friend_rows_raw"] = friends_raw.height

    tables = {
        "artists": artists,
        "plays": plays,
        "tag_assignments": tag_assignments,
        "friends": friends,
    }
    return tables, stats


# ---------------------------------------------------------------- writing


def write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Write deterministically: zstd, statistics on, fixed row-group size, no timestamps."""
    df.write_parquet(
        path,
        compression="zstd",
        compression_level=19,
        statistics=True,
        row_group_size=1_000_000,
        use_pyarrow=False,
    )


def display_path(path: Path) -> str:
    """Path relative to the repo root when possible (for the regenerate command)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def source_md(
    raw: Path, out: Path, tables: dict[str, pl.DataFrame], stats: dict[str, int]
) -> str:
    counts = {name: df.height for name, df in tables.items()}
    raw_rows = []
    for name in RAW_FILES:
        data = (raw / name).read_bytes()
        raw_rows.append(
            f"| `{name}` | `{sha256(data)}` | `{sha256(gzip.decompress(data))}` |"
        )
    readme = raw / "readme.txt"
    if readme.exists():
        raw_rows.append(f"| `readme.txt` (license source) | `{sha256(readme.read_bytes())}` | - |")

    raw_arg = "" if raw.resolve() == DEFAULT_RAW.resolve() else f" --raw {raw}"
    out_arg = "" if out.resolve() == DEFAULT_OUT.resolve() else f" --out {display_path(out)}"
    command = f".venv/bin/python scripts/build_lastfm_catalog.py{raw_arg}{out_arg}"
    a = tables["artists"]
    with_tags = a.filter(pl.col("tags").list.len() > 0).height

    return f"""# Last.fm music catalog (derived from HetRec 2011 Last.fm 2K)

The default music catalog embedded in ltrr. Every file here is **derived** from the
`hetrec2011-lastfm-2k` dataset (version 1.0, May 2011) released by GroupLens for the
2nd International Workshop on Information Heterogeneity and Fusion in Recommender Systems
(HetRec 2011) at ACM RecSys 2011; built by Ignacio Fernández-Tobías with Iván Cantador and
Alejandro Bellogín (Universidad Autónoma de Madrid). The data was collected from Last.fm
(http://www.lastfm.com).

## License: non-commercial use only

Quoted from the dataset's `readme.txt`:

> The users' names and other personal information in Last.fm are not provided in the dataset.
>
> The data contained in hetrec2011-lastfm-2k.zip is made available for non-commercial use.
>
> Those interested in using the data in a commercial context should contact Last.fm staff:
> http://www.lastfm.com/about/contact

Use these files for research and other non-commercial purposes only. Commercial use requires
permission from Last.fm. These terms apply to every file in this folder.

## Citation

As the dataset README asks, cite the Last.fm website, http://www.lastfm.com, and optionally:

```bibtex
@inproceedings{{Cantador:RecSys2011,
  author    = {{Cantador, Iv\\'{{a}}n and Brusilovsky, Peter and Kuflik, Tsvi}},
  title     = {{2nd Workshop on Information Heterogeneity and Fusion in Recommender Systems (HetRec 2011)}},
  booktitle = {{Proceedings of the 5th ACM conference on Recommender systems}},
  series    = {{RecSys 2011}},
  year      = {{2011}},
  location  = {{Chicago, IL, USA}},
  publisher = {{ACM}},
  address   = {{New York, NY, USA}},
}}
```

## Files

All parquet files are zstd-compressed; ids are strings, rows sorted by the ids' numeric value.

| file | rows | columns |
|---|---|---|
| `artists.parquet` | {counts["artists"]:,} | `artist_id`, `name`, `tags` (list), `tag_text`, `listeners`, `plays`, `popularity` |
| `plays.parquet` | {counts["plays"]:,} | `user_id`, `artist_id`, `plays` |
| `tag_assignments.parquet` | {counts["tag_assignments"]:,} | `user_id`, `artist_id`, `tag`, `year`, `month` |
| `friends.parquet` | {counts["friends"]:,} | `user_id`, `friend_id` |

- `artists.parquet`: one row per artist of `artists.dat` (URL columns dropped). `name` has HTML
  entities unescaped and whitespace stripped/collapsed ({stats["names_changed_by_cleaning"]} names
  changed, incl. Latin-1 mojibake repair). `tags` are the artist's top {MAX_TAGS} tags ranked by the
  number of distinct users who assigned them (ties by tag name); tags are lowercased with
  whitespace collapsed. {with_tags:,} artists have at least one tag, the rest an empty list.
  `tag_text` is `", ".join(tags)`. `listeners` = distinct users with a play count, `plays` =
  summed play count, `popularity` = `log1p(plays) / max(log1p(plays))` in [0, 1].
- `plays.parquet`: `user_artists.dat` unchanged (play count = the `weight` column).
- `tag_assignments.parquet`: `user_taggedartists.dat` with tag ids resolved to normalised tag
  strings; `day` dropped (almost always 1). Rows map 1:1 to the raw file.
  {stats["assignments_unknown_artist"]:,} rows refer to {stats["unknown_artist_ids"]:,} artist ids
  missing from `artists.dat`; they are kept here but cannot appear in `artists.parquet`.
  {stats["assignments_duplicated_after_normalisation"]} rows repeat a (user, artist, tag) triple
  because raw tags that differ only in whitespace merge (ranking counts distinct users, so this
  does not inflate `tags`). A handful of rows carry implausible years (1956, 1957, 1979), kept as-is.
- `friends.parquet`: `user_friends.dat` ({stats["friend_rows_raw"]:,} directed rows) reduced to
  undirected pairs, each once with `user_id < friend_id`.

## Regenerate

From the repo root:

```
{command}
```

Outputs are deterministic (same bytes on re-run with the same polars version; built with
polars {pl.__version__}).

## Raw inputs (sha256)

| file | sha256 (gzip file) | sha256 (uncompressed) |
|---|---|---|
{chr(10).join(raw_rows)}
"""


def human(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.2f} MiB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, default=DEFAULT_RAW, help="raw hetrec2011-lastfm-2k dir")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output dir")
    args = parser.parse_args(argv)

    raw: Path = args.raw
    out: Path = args.out
    missing = [name for name in RAW_FILES if not (raw / name).exists()]
    if missing:
        parser.error(f"missing raw files in {raw}: {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)

    print(f"reading {raw.resolve()}")
    tables, stats = build(raw)
    for name, df in tables.items():
        write_parquet(df, out / f"{name}.parquet")
    (out / "SOURCE.md").write_text(source_md(raw, out, tables, stats), encoding="utf-8")

    print(f"wrote {out.resolve()}")
    total = 0
    for name, df in tables.items():
        size = (out / f"{name}.parquet").stat().st_size
        total += size
        print(f"  {name + '.parquet':<26} {df.height:>9,} rows  {human(size):>11}")
    total += (out / "SOURCE.md").stat().st_size
    print(f"  {'total (incl. SOURCE.md)':<26} {'':>14}  {human(total):>11}")
    for key, value in stats.items():
        print(f"  {key}: {value:,}")


if __name__ == "__main__":
    main()
