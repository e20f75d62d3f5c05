"""Cold start: query–entity predictions from the catalog (names, name variants,
attribute values scaled by popularity), written at index time: ``predictions.parquet``
(the table, for people and tools) and the same memory-mapped for lookups
(:func:`write_mapped`)."""


from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable


from ltrr.errors import StateError
from ltrr.tables import column
from ltrr.text import normalize
from ltrr_plugins.arms.memory.keys import _separator_regex, name_keys, near_key

if TYPE_CHECKING:
    import polars as pl


PREDICTIONS = "predictions.parquet"
KEYS = "keys"                      # prediction keys (ltrr.mapped.Vocabulary)
NEAR = "near"                      # their near-duplicate keys
STARTS = "starts.npy"              # key id → its first prediction (CSR offsets)
ENTITIES = "entities.arrow"        # predictions by key id, best first: entity ids
SCORES = "scores.npy"              # … and their scores
NEAR_STARTS = "near_starts.npy"    # near key id → first of its keys in NEAR_KEYS
NEAR_KEYS = "near_keys.npy"        # key ids per near key, the one equal to it first


def write_mapped(out_dir: Path, best: "pl.DataFrame", stopwords: frozenset[str]) -> None:
    """The predictions (sorted by key, best first) as mapped files: key → its run of
    entities and scores; near-duplicate key → its keys (the one equal to it first)."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    from ltrr.mapped import Vocabulary, write_arrow

    runs = (best.select("key").with_row_index("i").group_by("key", maintain_order=True)
            .agg(pl.col("i").first().alias("first"), pl.len().alias("n")))
    keys = runs["key"].to_list()
    key_ids = Vocabulary.write(out_dir, KEYS, keys)
    first = runs["first"].to_numpy().astype(np.int64)
    count = runs["n"].to_numpy().astype(np.int64)
    by_id = np.argsort(key_ids)                  # for each id, the key's index in keys
    starts = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(count[by_id], out=starts[1:])
    rows = (np.repeat(first[by_id] - starts[:-1], count[by_id])
            + np.arange(int(starts[-1]), dtype=np.int64))
    write_arrow(out_dir / ENTITIES, pa.table({
        "entity_id": best["entity_id"].to_arrow().take(pa.array(rows))}))
    np.save(out_dir / SCORES, best["score"].cast(pl.Float64).to_numpy()[rows])
    np.save(out_dir / STARTS, starts)
    near: dict[str, list[str]] = {}
    for key in keys:                             # sorted: members keep key order
        near.setdefault(near_key(key, stopwords), []).append(key)
    near_list = list(near)
    near_ids = Vocabulary.write(out_dir, NEAR, near_list)
    id_of = dict(zip(keys, key_ids.tolist()))
    members = [[id_of[k] for k in sorted(near[n], key=lambda k, n=n: k != n)]
               for n in near_list]
    order = np.argsort(near_ids)
    near_starts = np.zeros(len(near_list) + 1, dtype=np.int64)
    np.cumsum([len(members[j]) for j in order.tolist()], out=near_starts[1:])
    np.save(out_dir / NEAR_STARTS, near_starts)
    np.save(out_dir / NEAR_KEYS, np.asarray([i for j in order.tolist() for i in members[j]],
                                            dtype=np.int64))


class Predictions:
    """Builds ``predictions.parquet`` (a mixin of :class:`MemoryArm`: uses its params,
    context and key functions)."""

    def _column(self, frame: "pl.DataFrame", name: str, field: str) -> "pl.Series":
        return column(frame, name, node=self.ctx.node_id, field=field)

    def _popularity(self, frame: "pl.DataFrame") -> list[float]:
        import polars as pl

        if self.params.popularity is None:
            return [1.0] * frame.height
        col = self._column(frame, self.params.popularity, "with.popularity")
        if not col.dtype.is_numeric():
            raise StateError(f"popularity column '{col.name}' is {col.dtype}, not numeric",
                             node=self.ctx.node_id, field="with.popularity",
                             hint="name a numeric column (plays, listeners, a score)")
        values = col.cast(pl.Float64).fill_null(0.0).fill_nan(0.0)
        if values.len() and values.min() < 0:
            raise StateError(f"popularity column '{col.name}' has negative values",
                             node=self.ctx.node_id, field="with.popularity",
                             hint="use a column >= 0 (counts, a [0, 1] score)")
        if self.params.popularity_log:
            values = values.log1p()
        top = values.max() if values.len() else 0.0
        if not top:
            return [1.0] * frame.height
        return (values / top).to_list()

    def build(self, out_dir: Path, progress: Callable[[int, int], None]) -> dict[str, Any]:
        import polars as pl

        catalog = self.ctx.catalog
        frame, ids = catalog.frame, catalog.ids
        pop = self._popularity(frame)
        n = frame.height
        total = n * ((1 if self.params.name else 0) + len(self.params.attributes)) or 1
        done = 0
        parts: list[pl.DataFrame] = []
        stats: dict[str, Any] = {}
        schema = {"key": pl.String, "entity_id": pl.String, "score": pl.Float64,
                  "pop": pl.Float64, "row": pl.Int64, "source": pl.String}

        if self.params.name is not None:
            src = self.params.name
            col = self._column(frame, src.column, "with.name.column")
            if col.dtype not in (pl.String, pl.List(pl.String), pl.Categorical):
                raise StateError(f"name column '{src.column}' is {col.dtype}, not text",
                                 node=self.ctx.node_id, field="with.name.column",
                                 hint="name a string column (or a list of aliases)")
            sep = _separator_regex(src.separators)
            keys, ents, scores, pops, rows, kinds = [], [], [], [], [], []
            if col.dtype == pl.Categorical:
                col = col.cast(pl.String)
            for i, cell in enumerate(col.to_list()):
                for raw in (cell if isinstance(cell, list) else [cell]):
                    if not raw:
                        continue
                    scale = 1.0 - src.popularity_weight + src.popularity_weight * pop[i]
                    for key, kind, score in name_keys(str(raw), src, sep):
                        keys.append(key)
                        ents.append(ids[i])
                        scores.append(score if kind == "name" else score * scale)
                        pops.append(pop[i])
                        rows.append(i)
                        kinds.append(kind)
                if i % 4096 == 4095:
                    progress(done + i + 1, total)
            done += n
            progress(done, total)
            parts.append(pl.DataFrame({"key": keys, "entity_id": ents, "score": scores,
                                       "pop": pops, "row": rows, "source": kinds},
                                      schema=schema))

        for a, src in enumerate(self.params.attributes):
            field = f"with.attributes.{a}.column"
            col = self._column(frame, src.column, field)
            if col.dtype == pl.Categorical:
                col = col.cast(pl.String)
            if col.dtype == pl.String:
                col = col.cast(pl.List(pl.String))
            if col.dtype != pl.List(pl.String):
                raise StateError(f"attribute column '{src.column}' is {col.dtype}, not text "
                                 "or a list of text", node=self.ctx.node_id, field=field,
                                 hint="name a string or list-of-strings column (e.g. tags)")
            long = (pl.DataFrame({"value": col, "row": pl.int_range(n, eager=True),
                                  "pop": pl.Series(pop, dtype=pl.Float64),
                                  "entity_id": pl.Series(ids, dtype=pl.String)})
                    .with_columns(pl.col("value").list.eval(
                        pl.int_range(1, pl.len() + 1)).alias("rank"))
                    .explode("value", "rank")
                    .drop_nulls("value"))
            uniq = long["value"].unique().to_list()
            mapping = {v: normalize(v) for v in uniq}
            long = long.with_columns(
                pl.col("value").replace_strict(mapping, return_dtype=pl.String).alias("key"))
            long = (long.filter(pl.col("key").str.len_chars() >= src.min_chars)
                    .sort("rank").unique(["key", "row"], keep="first"))
            long = long.filter(pl.len().over("key") >= src.min_entities)
            scored = (long.with_columns((src.weight * pl.col("pop")
                                     / (1.0 + src.rank_decay * (pl.col("rank") - 1)))
                                    .alias("score"))
                      .sort(["key", "score", "pop", "row"], descending=[False, True, True, False])
                      .group_by("key", maintain_order=True).head(src.top_n))
            parts.append(scored.select(
                "key", "entity_id", "score", "pop", "row",
                pl.lit(f"attr:{src.column}").alias("source")).cast(schema))
            stats[f"{src.column}_values"] = scored["key"].n_unique()
            done += n
            progress(done, total)

        table = (pl.concat(parts) if parts else pl.DataFrame(schema=schema))
        by_source = table.group_by("source").len().sort("source").rows()
        best = (table.sort(["key", "entity_id", "score"], descending=[False, False, True])
                .unique(["key", "entity_id"], keep="first")
                .sort(["key", "score", "pop", "row"], descending=[False, True, True, False])
                .select("key", "entity_id", pl.col("score").cast(pl.Float32), "source"))
        best = best.with_columns(pl.col("source").cast(pl.Categorical))
        best.write_parquet(out_dir / PREDICTIONS, compression="zstd", statistics=False)
        write_mapped(out_dir, best, frozenset(self.params.stopwords))
        stats.update({"pairs": best.height, "keys": best["key"].n_unique(),
                      "entities": best["entity_id"].n_unique()})
        stats.update({f"pairs_{s.replace('attr:', '')}": c for s, c in by_source})
        stats["bytes"] = (out_dir / PREDICTIONS).stat().st_size
        return stats
