"""Scale data for ``bench_scale.py``: the Last.fm catalog, its tag assignments and its
co-listening multiplied ×F, seeded.

Copy 0 is the original; copy i > 0 of an artist gets the id ``<id>~<i>``, the name with
one more word (drawn from a vocabulary of pseudo-words, so the names stay distinct and
the vocabulary grows as a real catalog's does), one of its tags replaced by a random
tag of the whole catalog one time in three, and its plays and listeners jittered. Users
are copied the same way (``<user>~<i>``) and listen to the copies of their artists, but
one play in ten goes to the same artist of another copy, so the co-listening graph is
one connected whole rather than F islands. Everything is vectorised with polars and
numpy: ×100 (1.76 M artists, 9.3 M plays) takes well under a minute.

    .venv/bin/python benchmarks/scale_data.py 10 /tmp/scale-10
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
LASTFM = ROOT / "examples" / "data" / "lastfm"
SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "sil", "da", "ne", "qua", "bri", "zo",
             "fel", "ur", "ash", "mon", "pe", "lin", "gor", "sa", "thi", "ob", "rem", "xi"]
#: chance that a copy's tag list has one tag replaced; of a play going to another copy
TAG_SWAP, CROSS_PLAY = 1 / 3, 0.1


def _words(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct-ish pseudo-words of 2-3 syllables."""
    syl = np.asarray(SYLLABLES)
    parts = [syl[rng.integers(0, len(syl), n)] for _ in range(3)]
    three = rng.random(n) < 0.5
    out = np.char.add(parts[0], parts[1])
    return np.where(three, np.char.add(out, parts[2]), out)


def _suffix(ids: pl.Series, copy: pl.Series) -> pl.Series:
    return pl.when(copy == 0).then(ids).otherwise(ids + "~" + copy.cast(pl.String))


def catalog(factor: int, seed: int = 0) -> pl.DataFrame:
    """The artists ×``factor`` (see the module docstring), columns as artists.parquet."""
    base = pl.read_parquet(LASTFM / "artists.parquet")
    n = base.height
    rng = np.random.default_rng(seed)
    copy = np.repeat(np.arange(factor), n)
    frame = pl.concat([base] * factor).with_columns(_copy=pl.Series(copy))
    vocab = sorted({t for tags in base["tags"].to_list() for t in tags or ()})
    words = _words(n * factor, rng)
    swap = (rng.random(n * factor) < TAG_SWAP) & (copy > 0)
    new_tag = np.asarray(vocab)[rng.integers(0, len(vocab), n * factor)]
    jitter = np.where(copy > 0, np.exp(rng.normal(0.0, 0.3, n * factor)), 1.0)
    frame = frame.with_columns(
        artist_id=_suffix(pl.col("artist_id"), pl.col("_copy")),
        name=pl.when(pl.col("_copy") == 0).then(pl.col("name"))
        .otherwise(pl.col("name") + " " + pl.Series(words).str.to_titlecase()),
        tags=pl.when(pl.Series(swap) & (pl.col("tags").list.len() > 0))
        .then(pl.concat_list(pl.col("tags").list.slice(1), pl.Series(new_tag)))
        .otherwise(pl.col("tags")),
        plays=(pl.col("plays") * pl.Series(jitter)).round(0).cast(pl.Int64),
        listeners=(pl.col("listeners") * pl.Series(jitter)).round(0).cast(pl.Int64),
        popularity=(pl.col("popularity") * pl.Series(jitter)).clip(0.0, 1.0),
    ).with_columns(tag_text=pl.when(pl.col("_copy") == 0).then(pl.col("tag_text"))
                   .otherwise(pl.col("tags").list.join(", ")))
    return frame.select(base.columns)


def plays(factor: int, seed: int = 0) -> pl.DataFrame:
    """user_id, artist_id, plays ×``factor``: copy i's users play copy i's artists, one
    play in ten the same artist of another copy."""
    base = pl.read_parquet(LASTFM / "plays.parquet")
    n = base.height
    rng = np.random.default_rng(seed + 1)
    copy = np.repeat(np.arange(factor), n)
    other = np.where(rng.random(n * factor) < CROSS_PLAY,
                     rng.integers(0, factor, n * factor), copy)
    return pl.concat([base] * factor).with_columns(
        user_id=_suffix(pl.col("user_id"), pl.Series(copy)),
        artist_id=_suffix(pl.col("artist_id"), pl.Series(other)))


def tag_assignments(factor: int, seed: int = 0) -> pl.DataFrame:
    """user_id, artist_id, tag (and year, month) ×``factor``, users and artists copied."""
    base = pl.read_parquet(LASTFM / "tag_assignments.parquet")
    copy = pl.Series(np.repeat(np.arange(factor), base.height))
    return pl.concat([base] * factor).with_columns(
        user_id=_suffix(pl.col("user_id"), copy),
        artist_id=_suffix(pl.col("artist_id"), copy))


def write(factor: int, folder: Path, seed: int = 0) -> dict[str, Path]:
    """The three files ×``factor`` in ``folder`` (made if missing); their paths by name."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {"artists": folder / "artists.parquet", "plays": folder / "plays.parquet",
           "tag_assignments": folder / "tag_assignments.parquet"}
    catalog(factor, seed).write_parquet(out["artists"])
    plays(factor, seed).write_parquet(out["plays"])
    tag_assignments(factor, seed).write_parquet(out["tag_assignments"])
    return out


if __name__ == "__main__":
    for name, path in write(int(sys.argv[1]), Path(sys.argv[2])).items():
        print(name, path, pl.scan_parquet(path).select(pl.len()).collect().item())
