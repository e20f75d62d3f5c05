"""The learned memory: decayed weighted engagement per (query key, entity), learned
from feedback and kept in ``<node>.learned/``: ``memory.parquet`` (the base) and
``memory.deltas/`` (after each learn, the rows of the keys it touched, replacing theirs),
each file written atomically. A learn writes only what it changed; once the deltas hold
as many rows as the base (or there are ``MAX_DELTAS`` of them), they are folded into a
new base (which names the last delta it holds) and removed: each row is rewritten
O(1) times on average, not on every learn. :func:`read_pairs` reads the whole."""


from __future__ import annotations

import io
import json
import logging
import math
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any


from ltrr.errors import StateError
from ltrr.state import atomic_write_bytes
from ltrr.timestamps import valid_expr
from ltrr_plugins.arms.memory.keys import near_key, query_key

if TYPE_CHECKING:
    import polars as pl


LEARNED = "memory.parquet"
DELTAS = "memory.deltas"
#: deltas folded into the base once there are this many (or they hold its row count)
MAX_DELTAS = 32
THROUGH = "ltrr_memory_through"


LEARNED_FORMAT = 1


DAY = 86400.0


_LN2 = math.log(2.0)


INTERACTION_NEEDS = ("query", "entity_id", "weight", "timestamp")


# A learned key's entry: (t, S, events, entity ids, W), decayed to the key's latest
# event t. A plain tuple of strings and floats: the garbage collector stops tracking it,
# so a memory of 100k pairs does not slow down every full collection.
_T, _S, _EVENTS, _ENTITIES, _W = range(5)


class LearnedStore:
    """Learning and persistence of the memory (a mixin of :class:`MemoryArm`)."""

    @property
    def _learned_path(self) -> Path:
        return self.ctx.learned_dir / LEARNED

    @staticmethod
    def _empty_pairs() -> "pl.DataFrame":
        import polars as pl

        return pl.DataFrame(schema={"key": pl.String, "entity_id": pl.String,
                                    "w": pl.Float64, "a": pl.Float64, "events": pl.Int64,
                                    "t": pl.Float64})

    def _read_learned(self) -> "pl.DataFrame":
        import polars as pl

        path = self._learned_path
        try:
            pairs, fmt, self._through, self._delta_rows = read_pairs(self.ctx.learned_dir)
        except Exception as exc:
            raise StateError(f"learned state {path} is unreadable: {exc}",
                             node=self.ctx.node_id,
                             hint=f"move {path} away to start learning afresh (the events "
                                  "stay in the pipeline's event log)") from exc
        if pairs is None:
            return self._empty_pairs()
        if fmt != LEARNED_FORMAT or set(pairs.columns) != set(self._empty_pairs().columns):
            raise StateError(f"learned state {path} has format {fmt}, expected "
                             f"{LEARNED_FORMAT}", node=self.ctx.node_id,
                             hint=f"move {path} away to start learning afresh")
        pairs = pairs.select(self._empty_pairs().columns)
        finite = pl.all_horizontal(pl.col("w", "a", "t").is_finite())
        bad = pairs.filter(~finite)
        if bad.height:          # written before events' times were checked: drop, say so
            logging.getLogger("ltrr").warning(
                "%s: %d learned pairs of %d keys hold non-finite values (an event with an "
                "invalid timestamp); they are ignored. To relearn them from the event log, "
                "move %s away and run `ltrr train` (events with invalid timestamps are "
                "skipped)", path, bad.height, bad["key"].n_unique(), path.parent)
            pairs = pairs.filter(finite)
        return pairs

    def _update_learned(self, pairs: "pl.DataFrame") -> None:
        """(Re)materialise the lookup entries of the keys present in ``pairs``."""
        import polars as pl

        if pairs.height == 0:
            return
        grouped = (pairs.group_by("key")
                   .agg(pl.col("t").max(), pl.col("a").sum().alias("s"),
                        pl.col("events").sum(), pl.col("entity_id"), pl.col("w")))
        learned = self._learned
        for key, t, s, events, ents, ws in grouped.iter_rows():
            learned[key] = (t, s, events, tuple(ents), tuple(ws))
            if t > self._t_now:
                self._t_now = t

    def learn(self, interactions: "pl.DataFrame") -> dict[str, Any]:
        """Add new interactions to the memory; persist atomically; return stats."""
        import polars as pl

        from ltrr.feedback.interactions import require_columns

        require_columns(interactions, INTERACTION_NEEDS, self.ctx.node_id)
        started = time.perf_counter()
        with self._lock:
            df = interactions.select(
                pl.col("query").cast(pl.String), pl.col("entity_id").cast(pl.String),
                pl.col("weight").cast(pl.Float64), pl.col("timestamp").cast(pl.Float64))
            received = df.height
            queries = df["query"].drop_nulls().unique().to_list()
            keys = {q: query_key(q) for q in queries}
            df = df.with_columns(pl.col("query").replace_strict(
                keys, default="", return_dtype=pl.String).fill_null("").alias("key"))
            no_query = df.filter(pl.col("key") == "").height
            df = df.filter(pl.col("key") != "")
            finite = pl.col("weight").is_finite().fill_null(False)
            no_weight = df.filter(~finite).height
            df = df.filter(finite)
            # a time no date can show (NaN, inf, 1e300, before 1970) would become the
            # memory's "now" and decay every other key to nothing: ignored, counted
            sane = valid_expr("timestamp", max_future=None).fill_null(True)
            bad_time = df.filter(~sane).height
            df = df.filter(sane)
            zero = df.filter(pl.col("weight") == 0).height
            df = df.filter(pl.col("weight") != 0)
            # the batch's entities looked up in the catalog (mapped ids at scale), not
            # the catalog's ids listed for every learn
            catalog = self.ctx.catalog
            seen = [e for e in df["entity_id"].drop_nulls().unique().to_list()
                    if catalog.row_of(e) is not None]
            known = pl.col("entity_id").is_in(pl.Series(seen, dtype=pl.String).implode())
            unknown = df.filter(~known).height
            df = df.filter(known)
            now = df["timestamp"].max() if df.height else None
            df = df.with_columns(pl.col("timestamp").fill_null(
                now if now is not None else time.time()))
            stats: dict[str, Any] = {"interactions": received, "learned": df.height}
            for name, count in (("no_query", no_query), ("no_weight", no_weight),
                                ("bad_timestamp", bad_time), ("zero_weight", zero),
                                ("unknown_entity", unknown)):
                if count:
                    stats[f"ignored_{name}"] = count
            if df.height:
                merged = self._merge(self._pairs, df)
                touched = df["key"].unique()
                self._save(merged, touched)
                self._pairs = merged
                self._update_learned(merged.filter(pl.col("key").is_in(touched.implode())))
                self._after_new_keys(touched.to_list())
            stats["keys_updated"] = df["key"].n_unique() if df.height else 0
            stats["keys"] = len(self._learned)
            stats["pairs"] = self._pairs.height
            stats["seconds"] = round(time.perf_counter() - started, 3)
            return stats

    def _merge(self, pairs: "pl.DataFrame", events: "pl.DataFrame") -> "pl.DataFrame":
        """Old pairs + new events → new pairs, each key decayed to its latest event."""
        import polars as pl

        lam = self._lam
        old_t = pairs.group_by("key").agg(pl.col("t").max().alias("t_old"))
        ref = (events.group_by("key").agg(pl.col("timestamp").max().alias("t_new"))
               .join(old_t, on="key", how="left")
               .with_columns(pl.max_horizontal("t_new", "t_old").alias("t_new"))
               .select("key", "t_new"))
        fresh = (events.join(ref, on="key")
                 .with_columns((pl.col("weight")
                                * ((pl.col("timestamp") - pl.col("t_new")) * lam).exp())
                               .alias("c"))
                 .group_by("key", "entity_id")
                 .agg(pl.col("c").sum().alias("w"), pl.col("c").abs().sum().alias("a"),
                      pl.len().cast(pl.Int64).alias("events"), pl.col("t_new").first()
                      .alias("t")))
        aged = (pairs.join(ref, on="key", how="left")
                .with_columns(((pl.col("t") - pl.col("t_new")) * lam).exp().fill_null(1.0)
                              .alias("f"))
                .select("key", "entity_id", pl.col("w") * pl.col("f"),
                        pl.col("a") * pl.col("f"), "events",
                        pl.coalesce("t_new", "t").alias("t")))
        return (pl.concat([aged, fresh.select(aged.columns)])
                .group_by("key", "entity_id", maintain_order=True)
                .agg(pl.col("w").sum(), pl.col("a").sum(), pl.col("events").sum(),
                     pl.col("t").max()))

    def _save(self, pairs: "pl.DataFrame", touched: "pl.Series") -> None:
        """Persist: the touched keys' rows as a delta, or everything as a new base when
        the deltas have grown to the base's size (see the module docstring)."""
        import polars as pl

        base_exists = self._learned_path.exists()
        delta = pairs.filter(pl.col("key").is_in(touched.implode()))
        rows = self._delta_rows + delta.height
        deltas = self.ctx.learned_dir / DELTAS
        if not base_exists or rows >= pairs.height - rows or \
                len(list(deltas.glob("delta-*.parquet"))) >= MAX_DELTAS:
            self._write_base(pairs)
            return
        name = f"delta-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        buf = io.BytesIO()
        delta.write_parquet(buf, compression="zstd", statistics=False)
        atomic_write_bytes(deltas / name, buf.getvalue())
        self._delta_rows = rows

    def _write_base(self, pairs: "pl.DataFrame") -> None:
        deltas = sorted((self.ctx.learned_dir / DELTAS).glob("delta-*.parquet"))
        through = deltas[-1].name if deltas else self._through
        buf = io.BytesIO()
        pairs.write_parquet(buf, compression="zstd", statistics=False, metadata={
            "ltrr_memory_format": str(LEARNED_FORMAT),
            "ltrr_memory_params": json.dumps({"half_life_days": self.params.half_life_days}),
            THROUGH: through,
        })
        atomic_write_bytes(self._learned_path, buf.getvalue())   # the commit point
        for d in deltas:
            d.unlink(missing_ok=True)
        self._through, self._delta_rows = through, 0

    def _after_new_keys(self, keys: list[str]) -> None:
        """Index newly learned keys by near-duplicate key and for the fuzzy fallback."""
        near = dict(self._learned_near)
        added: dict[str, list[str]] = {}
        for key in keys:
            nk = near_key(key, self._stop)
            have = near.get(nk, ())
            if key not in have:
                near[nk] = (key,) + have if key == nk else have + (key,)
                if (not have and not self._pred_near(nk)
                        and len(nk) >= self.params.fuzzy_min_chars):
                    added.setdefault((nk[0], len(nk)), []).append(nk)
        self._learned_near = near
        if added and self.params.fuzzy_threshold < 100:
            buckets = dict(self._buckets)
            for block, new in added.items():
                buckets[block] = buckets.get(block, []) + new
            self._buckets = buckets
        self._fuzzy_cache = {}


def read_pairs(learned_dir: Path) -> tuple["pl.DataFrame | None", int, str, int]:
    """The learned pairs in ``learned_dir`` (base + deltas; None: nothing learned), the
    base's format, the last delta it holds and the rows of the deltas after it. Raises
    what reading a damaged file raises. A delta removed by a concurrent fold (another
    process learning) means the base changed: read again."""
    import polars as pl

    path = Path(learned_dir) / LEARNED
    for attempt in range(5):
        if not path.exists():
            return None, LEARNED_FORMAT, "", 0
        try:       # one read: a fold replacing the file between two reads would mix them
            data = io.BytesIO(path.read_bytes())
        except FileNotFoundError:
            continue
        meta = pl.read_parquet_metadata(data)
        pairs = pl.read_parquet(data)
        fmt = int(meta.get("ltrr_memory_format", "0"))
        through = meta.get(THROUGH, "")
        rows = 0
        try:
            for d in sorted((Path(learned_dir) / DELTAS).glob("delta-*.parquet")):
                if d.name <= through:
                    continue                    # folded in already (a fold stopped early)
                delta = pl.read_parquet(d).select(pairs.columns)
                rows += delta.height
                pairs = pl.concat([pairs.filter(~pl.col("key").is_in(
                    delta["key"].unique().implode())), delta])
        except FileNotFoundError:
            if attempt == 4:
                raise
            continue
        return pairs, fmt, through, rows
    raise AssertionError("unreachable")
