"""``memory`` arm: query → entity memory (Q2E), predicted from the catalog, learned from use.

The "head query" arm. For a normalised query key it remembers which entities users
engaged with, and answers with them, best first.

* **Cold start** (``ltrr index``): predicted query–entity pairs from the catalog —
  every entity's exact name, name variants (without a leading article, compact
  "acdc" for "AC/DC"), the name before " feat. " / " & " / " vs " ..., and each
  value of attribute columns such as ``tags`` (a tag → the entities carrying it,
  scaled by popularity and by the tag's rank in the entity's list, top-N per tag).
  Written to ``predictions.parquet`` in the node's state folder.
* **Learning** (``ltrr feedback``): per (query key, entity) the decayed weighted
  engagement; evidence gradually replaces the predictions (formula on
  :class:`MemoryArm`). Kept in ``<state_dir>/<node>.learned/memory.parquet``, which
  re-indexing never touches.
* **Lookup**: the exact key (``normalize`` of the dictionary slotter), then the
  near-duplicate key (tokens minus stopwords, sorted: "the beatles" ≈ "beatles",
  "hip hop french" ≈ "french hip hop"), then optionally a cheap fuzzy match.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import Field, field_validator

from ltrr.components import Arm, Indexed, Learner, Params
from ltrr.errors import StateError
from ltrr.hookspecs import hookimpl
from ltrr.state import atomic_write_bytes
from ltrr.timestamps import valid_expr
from ltrr.types import ArmRequest, Candidate
from ltrr.text import normalize

if TYPE_CHECKING:
    import polars as pl

PREDICTIONS = "predictions.parquet"
LEARNED = "memory.parquet"
LEARNED_FORMAT = 1
MAX_KEY_CHARS = 256     # a learned key keeps this much of a normalised query (and lookups)


def query_key(text: str) -> str:
    """The key of a query: ``normalize``d, cut to ``MAX_KEY_CHARS`` so that learned state
    stays bounded whatever clients send (a 20,000-character query is a 256-character key)."""
    return normalize(text)[:MAX_KEY_CHARS].rstrip()
DAY = 86400.0
_LN2 = math.log(2.0)
_FUZZY_CACHE = 10_000        # fuzzy lookups remembered (cleared when learning adds keys)

DEFAULT_SEPARATORS = [" feat. ", " feat ", " ft. ", " ft ", " featuring ", " (feat", " (ft",
                      " & ", " and ", " vs. ", " vs ", " x ", " with ", ", ", " + ", " / "]
DEFAULT_STOPWORDS = ["the", "a", "an", "and", "of", "by", "feat", "ft", "featuring", "music",
                     "songs", "song", "band", "bands", "artist", "artists"]
INTERACTION_NEEDS = ("query", "entity_id", "weight", "timestamp")


# --------------------------------------------------------------------------- params

class NameSource(Params):
    column: str = Field(description="Catalog column of entity names (string, or a list of "
                                    "aliases).")
    exact: float = Field(1.0, ge=0, le=1, description=(
        "Predicted score of an entity for its exact (normalised) name."))
    variant: float = Field(0.9, ge=0, le=1, description=(
        "Predicted score for a name variant: without a leading article ('beatles' for "
        "'The Beatles'), or compacted ('acdc' for 'AC/DC', 'rem' for 'R.E.M.')."))
    part: float = Field(0.5, ge=0, le=1, description=(
        "Predicted score for the part of the name before a separator ('nick cave' for "
        "'Nick Cave & the Bad Seeds'). 0 disables."))
    popularity_weight: float = Field(1.0, ge=0, le=1, description=(
        "Variant and part scores are multiplied by 1 - popularity_weight + "
        "popularity_weight * popularity, so that 'rock' (a variant of the obscure 'The "
        "Rock') does not outrank the popular entities tagged rock. Exact names are not."))
    separators: list[str] = Field(DEFAULT_SEPARATORS, description=(
        "Separators (case-insensitive, spaces included) after which a name's 'part' ends."))
    articles: list[str] = Field(["the"], description=(
        "Leading words dropped to make a variant (normalised, e.g. 'the')."))
    min_chars: int = Field(3, ge=1, description=(
        "Variants and parts shorter than this (in characters) are not predicted."))

    @field_validator("articles", mode="after")
    @classmethod
    def _normalised(cls, words: list[str]) -> list[str]:
        return [w for w in (normalize(x) for x in words) if w]


class AttributeSource(Params):
    column: str = Field(description=(
        "Catalog column of attribute values (a list such as tags, in rank order, or a "
        "string); each value becomes a query key predicting the entities carrying it."))
    weight: float = Field(0.6, ge=0, le=1, description=(
        "Predicted score of the most popular entity carrying the value at rank 1."))
    top_n: int = Field(50, ge=1, description="Entities kept per value (best predicted first).")
    rank_decay: float = Field(0.15, ge=0, description=(
        "How fast the score falls with the value's 1-based rank r in the entity's list: "
        "factor 1 / (1 + rank_decay * (r - 1)); 0 ignores the rank."))
    min_entities: int = Field(1, ge=1, description=(
        "Ignore values carried by fewer entities than this."))
    min_chars: int = Field(2, ge=1, description="Ignore values shorter than this (normalised).")


class MemoryParams(Params):
    name: NameSource | None = Field(None, description=(
        "Predict entities from their names (cold start). Absent: no name predictions."))
    attributes: list[AttributeSource] = Field(default_factory=list, description=(
        "Predict entities from attribute columns (tags, genres...), one entry per column."))
    popularity: str | None = Field(None, description=(
        "Numeric catalog column (>= 0) scaling attribute predictions and breaking ties "
        "between entities of one key; divided by its maximum. Absent: all entities equal."))
    popularity_log: bool = Field(False, description=(
        "Apply log1p to the popularity column before dividing by its maximum (for raw "
        "counts such as plays)."))
    prior_strength: float = Field(3.0, gt=0, description=(
        "k in score = (W + k * predicted) / (S + k): how many units of (decayed, weighted) "
        "engagement a key needs before its evidence outweighs the predictions."))
    half_life_days: float = Field(30.0, gt=0, description=(
        "Half-life of engagement, in days of event time: an event this much older than "
        "the latest event counts half."))
    stopwords: list[str] = Field(DEFAULT_STOPWORDS, description=(
        "Words dropped from near-duplicate keys (normalised); a query made only of "
        "stopwords keeps them all."))
    fuzzy_threshold: float = Field(90.0, ge=0, le=100, description=(
        "Minimum rapidfuzz ratio (0-100) for the fuzzy fallback, tried when neither the "
        "exact nor the near-duplicate key is known; 100 disables it."))
    fuzzy_min_chars: int = Field(5, ge=1, description=(
        "Only near-duplicate keys at least this long are matched fuzzily."))
    min_score: float = Field(0.0, ge=0, description=(
        "Entities scoring at or below this are not returned (skips can push a score to 0 "
        "or below)."))
    features: bool = Field(True, description=(
        "Attach features to candidates: memory_prior (predicted score), memory_evidence "
        "(decayed engagement S of the key) and memory_match (0 exact, 1 near, 2 fuzzy)."))

    @field_validator("stopwords", mode="after")
    @classmethod
    def _normalised(cls, words: list[str]) -> list[str]:
        return [w for w in (normalize(x) for x in words) if w]


# --------------------------------------------------------------------------- helpers

def near_key(key: str, stopwords: frozenset[str]) -> str:
    """The near-duplicate form of a normalised key: tokens minus stopwords, sorted."""
    tokens = key.split()
    kept = [t for t in tokens if t not in stopwords] or tokens
    return " ".join(sorted(kept))


def _separator_regex(separators: list[str]) -> re.Pattern | None:
    seps = [s for s in separators if s]
    return re.compile("|".join(re.escape(s) for s in seps), re.I) if seps else None


def name_keys(raw: str, src: NameSource, sep: re.Pattern | None
              ) -> list[tuple[str, str, float]]:
    """(key, kind, score) pairs a name predicts: exact, variants, the part before a separator."""
    key = normalize(raw)
    if not key:
        return []
    out = [(key, "name", src.exact)]
    articles = set(src.articles)

    def variants(k: str, text: str, score: float, kind: str) -> None:
        toks = k.split()
        if len(toks) > 1 and toks[0] in articles:
            out.append((" ".join(toks[1:]), kind, score))
        compact = " ".join("".join(normalize(w).split()) for w in text.split())
        compact = " ".join(compact.split())
        if compact != k:
            out.append((compact, kind, score))
            ctoks = compact.split()
            if len(ctoks) > 1 and ctoks[0] in articles:
                out.append((" ".join(ctoks[1:]), kind, score))

    variants(key, raw, src.variant, "variant")
    if sep is not None and src.part > 0:
        head = sep.split(raw, 1)[0]
        part = normalize(head)
        if part and part != key:
            out.append((part, "part", src.part))
            variants(part, head, src.part, "part")
    seen: dict[str, tuple[str, str, float]] = {}
    for k, kind, score in out:
        if k == key or len(k) >= src.min_chars:
            if k not in seen or seen[k][2] < score:
                seen[k] = (k, kind, score)
    return list(seen.values())


# A learned key's entry: (t, S, events, entity ids, W), decayed to the key's latest
# event t. A plain tuple of strings and floats: the garbage collector stops tracking it,
# so a memory of 100k pairs does not slow down every full collection.
_T, _S, _EVENTS, _ENTITIES, _W = range(5)


# --------------------------------------------------------------------------- the arm

class MemoryArm(Arm, Indexed, Learner):
    """Query → entity memory: predicted from names and tags, learned from engagement.

    For a query key *q* and an entity *e*::

        score(q, e) = (g·W[q,e] + k·p[q,e]) / (g·S[q] + k)

    * ``p[q,e]`` — the cold-start prediction (0 when none);
    * ``W[q,e]`` — Σ over events on (q, e) of weight · 2^(−(t_q − t_event)/h): decayed
      weighted engagement (clicks +, skips −), ``h`` = ``half_life_days``;
    * ``S[q]`` — the same sum of |weight| over all of q's events: the key's evidence
      (``n``), so ``W/S`` is the observed share of q's engagement that went to e;
    * ``t_q`` — q's latest event; ``g`` = 2^(−(T − t_q)/h) ages the key's evidence to
      T, the latest event seen overall (time is event time, never the clock);
    * ``k`` — ``prior_strength``.

    Written as (n·observed + k·predicted)/(n + k) with n = g·S, observed = W/S: with no
    evidence the score is the prediction; as evidence grows it tends to the observed
    share, and predictions of entities nobody engaged with fade as k/(n + k).
    Entities scoring <= ``min_score`` are not returned.
    """

    name = "memory"
    threaded = False          # microseconds of Python per query: no thread hand-off
    Params = MemoryParams

    # --- cold start -------------------------------------------------------------------

    def state_key(self) -> dict[str, Any]:
        p = self.params
        return {"name": p.name.model_dump(mode="json") if p.name else None,
                "attributes": [a.model_dump(mode="json") for a in p.attributes],
                "popularity": p.popularity, "popularity_log": p.popularity_log}

    def _column(self, frame: "pl.DataFrame", column: str, field: str) -> "pl.Series":
        if column not in frame.columns:
            raise StateError(f"catalog has no column '{column}'", node=self.ctx.node_id,
                             field=field, hint=f"columns: {', '.join(frame.columns)}")
        return frame[column]

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
        stats.update({"pairs": best.height, "keys": best["key"].n_unique(),
                      "entities": best["entity_id"].n_unique()})
        stats.update({f"pairs_{s.replace('attr:', '')}": c for s, c in by_source})
        stats["bytes"] = (out_dir / PREDICTIONS).stat().st_size
        return stats

    # --- open / close -------------------------------------------------------------------

    def open(self) -> None:
        import polars as pl

        p = self.params
        self._stop = frozenset(p.stopwords)
        self._k = float(p.prior_strength)
        self._lam = _LN2 / (p.half_life_days * DAY)   # decay rate per second
        self._lock = threading.Lock()                  # serialises learn() calls
        self._fuzzy_cache: dict[str, tuple[str, float] | None] = {}
        # predictions: key -> (start, end) into the flat entity/score lists
        path = self.ctx.state_dir / PREDICTIONS
        self._pred_index: dict[str, tuple[int, int]] = {}
        self._pred_entities: list[str] = []
        self._pred_scores: list[float] = []
        self.has_predictions = path.exists()
        if self.has_predictions:
            try:
                table = pl.read_parquet(path, columns=["key", "entity_id", "score"])
            except Exception as exc:
                raise StateError(f"cannot read {path}: {exc}", node=self.ctx.node_id,
                                 hint="rebuild it with `ltrr index <spec> --force`") from exc
            self._pred_entities = table["entity_id"].to_list()
            self._pred_scores = table["score"].cast(pl.Float64).to_list()
            runs = (table.select("key").with_row_index("i")
                    .group_by("key", maintain_order=True)
                    .agg(pl.col("i").first().alias("start"), pl.len().alias("n")))
            self._pred_index = {k: (s, s + c) for k, s, c in
                                zip(runs["key"].to_list(), runs["start"].to_list(),
                                    runs["n"].to_list())}
        self._pred_near: dict[str, tuple[str, ...]] = self._near_index(self._pred_index)
        # learned state
        self._pairs = self._read_learned()
        self._learned: dict[str, tuple] = {}
        self._t_now = 0.0
        self._update_learned(self._pairs)
        self._learned_near = self._near_index(self._learned)
        self._buckets = self._fuzzy_buckets()

    def _near_index(self, keys) -> dict[str, tuple[str, ...]]:
        """Near-duplicate key → the exact keys sharing it (the canonical one first)."""
        near: dict[str, list[str]] = {}
        for key in keys:
            near.setdefault(near_key(key, self._stop), []).append(key)
        return {n: tuple(sorted(v, key=lambda k, n=n: k != n)) for n, v in near.items()}

    @staticmethod
    def _near(index: dict[str, tuple[str, ...]], nk: str) -> tuple[str, ...]:
        """The exact keys to use for a near-duplicate key: the key equal to it when there
        is one ("rock music" → "rock", not also "the rock"), else all of them."""
        keys = index.get(nk, ())
        return keys[:1] if keys and keys[0] == nk else keys

    def _fuzzy_buckets(self) -> dict[tuple[str, int], list[str]]:
        """Near keys by (first character, length): the fuzzy fallback's blocking."""
        buckets: dict[tuple[str, int], list[str]] = {}
        if self.params.fuzzy_threshold >= 100:
            return buckets
        for nk in sorted(set(self._pred_near) | set(self._learned_near)):
            if len(nk) >= self.params.fuzzy_min_chars:
                buckets.setdefault((nk[0], len(nk)), []).append(nk)
        return buckets

    # --- learned state ------------------------------------------------------------------

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
        if not path.exists():
            return self._empty_pairs()
        try:
            meta = pl.read_parquet_metadata(path)
            pairs = pl.read_parquet(path)
            fmt = int(meta.get("ltrr_memory_format", "0"))
        except Exception as exc:
            raise StateError(f"learned state {path} is unreadable: {exc}",
                             node=self.ctx.node_id,
                             hint=f"move {path} away to start learning afresh (the events "
                                  "stay in the pipeline's event log)") from exc
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
            catalog_ids = pl.Series(self.ctx.catalog.ids, dtype=pl.String).implode()
            known = pl.col("entity_id").is_in(catalog_ids)
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
                self._save(merged)
                touched = df["key"].unique()
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

    def _save(self, pairs: "pl.DataFrame") -> None:
        buf = io.BytesIO()
        pairs.write_parquet(buf, compression="zstd", statistics=False, metadata={
            "ltrr_memory_format": str(LEARNED_FORMAT),
            "ltrr_memory_params": json.dumps({"half_life_days": self.params.half_life_days}),
        })
        atomic_write_bytes(self._learned_path, buf.getvalue())

    def _after_new_keys(self, keys: list[str]) -> None:
        """Index newly learned keys by near-duplicate key and for the fuzzy fallback."""
        near = dict(self._learned_near)
        added: dict[str, list[str]] = {}
        for key in keys:
            nk = near_key(key, self._stop)
            have = near.get(nk, ())
            if key not in have:
                near[nk] = (key,) + have if key == nk else have + (key,)
                if (not have and nk not in self._pred_near
                        and len(nk) >= self.params.fuzzy_min_chars):
                    added.setdefault((nk[0], len(nk)), []).append(nk)
        self._learned_near = near
        if added and self.params.fuzzy_threshold < 100:
            buckets = dict(self._buckets)
            for block, new in added.items():
                buckets[block] = buckets.get(block, []) + new
            self._buckets = buckets
        self._fuzzy_cache = {}

    # --- lookup -------------------------------------------------------------------------

    def _predicted(self, keys: tuple[str, ...]) -> dict[str, float]:
        """Entity → predicted score over keys (max when several near-duplicates match)."""
        out: dict[str, float] = {}
        ents, scores = self._pred_entities, self._pred_scores
        for key in keys:
            span = self._pred_index.get(key)
            if span is None:
                continue
            for i in range(span[0], span[1]):
                e = ents[i]
                if scores[i] > out.get(e, -1.0):
                    out[e] = scores[i]
        return out

    def scores(self, text: str, k: int | None = None
               ) -> tuple[list[tuple[str, float, float]], float, int]:
        """The entities remembered for a query, best first (the top ``k`` when given).

        Returns ``([(entity_id, score, predicted), ...], evidence, match)``: ``evidence``
        is g·S summed over the matched key(s), ``match`` is 0 (exact key), 1
        (near-duplicate), 2 (fuzzy; scores multiplied by the similarity) or -1 (unknown).
        """
        key = query_key(text)
        if not key:
            return [], 0.0, -1
        match, sim = 0, 1.0
        lkeys: tuple[str, ...] = (key,) if key in self._learned else ()
        pkeys: tuple[str, ...] = (key,) if key in self._pred_index else ()
        if not lkeys and not pkeys:                     # exact key unknown: near-duplicates
            nk = near_key(key, self._stop)
            lkeys = self._near(self._learned_near, nk)
            pkeys = self._near(self._pred_near, nk)
            match = 1
            if not lkeys and not pkeys:                 # then the fuzzy fallback
                found = self._fuzzy(nk)
                if found is None:
                    return [], 0.0, -1
                nk, sim = found
                lkeys = self._near(self._learned_near, nk)
                pkeys = self._near(self._pred_near, nk)
                match = 2
        floor = self.params.min_score
        if not lkeys:                                   # predictions only
            if len(pkeys) == 1:                         # already sorted: slice
                s, e = self._pred_index[pkeys[0]]
                if k is not None:
                    e = min(e, s + k)
                ents, sc = self._pred_entities, self._pred_scores
                return ([(ents[i], sc[i] * sim, sc[i]) for i in range(s, e)
                         if sc[i] * sim > floor], 0.0, match)
            ranked = sorted(self._predicted(pkeys).items(), key=lambda x: -x[1])[:k]
            return [(e, p * sim, p) for e, p in ranked if p * sim > floor], 0.0, match
        pred = self._predicted(pkeys) if pkeys else {}
        t_now, lam = self._t_now, self._lam
        evidence = 0.0
        w_sum: dict[str, float] = {}
        for lk in lkeys:
            entry = self._learned.get(lk)
            if entry is None:
                continue
            g = math.exp((entry[_T] - t_now) * lam)
            evidence += g * entry[_S]
            for e, w in zip(entry[_ENTITIES], entry[_W]):
                w_sum[e] = w_sum.get(e, 0.0) + g * w
        denom = evidence + self._k
        prior = self._k / denom
        out = {e: prior * p for e, p in pred.items()}
        for e, w in w_sum.items():
            out[e] = out.get(e, 0.0) + w / denom
        ranked = sorted(out.items(), key=lambda x: -x[1])[:k]
        return ([(e, s * sim, pred.get(e, 0.0)) for e, s in ranked if s * sim > floor],
                evidence, match)

    def _fuzzy(self, nk: str) -> tuple[str, float] | None:
        if self.params.fuzzy_threshold >= 100 or len(nk) < self.params.fuzzy_min_chars:
            return None
        cache = self._fuzzy_cache
        if nk in cache:
            return cache[nk]
        # ratio = 2·matches / (len(a) + len(b)) >= t bounds the other key's length:
        # it lies within [n·t / (2 - t), n·(2 - t) / t]; only those buckets are searched.
        t = max(self.params.fuzzy_threshold / 100.0, 0.01)
        n, first, buckets = len(nk), nk[0], self._buckets
        lo, hi = math.ceil(n * t / (2 - t) - 1e-9), math.floor(n * (2 - t) / t + 1e-9)
        choices: list[str] = []
        for length in range(lo, hi + 1):
            choices += buckets.get((first, length), ())
        found = None
        if choices:
            from rapidfuzz import fuzz, process

            best = process.extractOne(nk, choices, scorer=fuzz.ratio,
                                      score_cutoff=self.params.fuzzy_threshold)
            if best is not None:
                found = (best[0], best[1] / 100.0)
        if len(cache) >= _FUZZY_CACHE:
            cache.clear()
        cache[nk] = found
        return found

    def retrieve_batch(self, requests: list[ArmRequest]) -> list[list[Candidate]]:
        arm = self.ctx.node_id
        feats = self.params.features
        out = []
        for r in requests:
            ranked, evidence, match = self.scores(r.query.text, r.k)
            if feats:
                out.append([Candidate(e, arm, i, s, {"memory_prior": p,
                                                     "memory_evidence": evidence,
                                                     "memory_match": float(match)})
                            for i, (e, s, p) in enumerate(ranked, 1)])
            else:
                out.append([Candidate(e, arm, i, s)
                            for i, (e, s, _) in enumerate(ranked, 1)])
        return out


@hookimpl
def ltrr_components():
    return [MemoryArm]
