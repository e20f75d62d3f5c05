"""The ``memory`` arm: params, opening, and the lookup (exact, near-duplicate, fuzzy key)
that scores predictions and learned evidence together."""


from __future__ import annotations

import math
import threading
from typing import Any

from pydantic import Field, field_validator

from ltrr.components import Arm, ColumnUse, Indexed, Learner, Params, TableUse
from ltrr.errors import StateError
from ltrr.hookspecs import hookimpl
from ltrr.text import normalize
from ltrr.types import ArmRequest, Candidate
from ltrr_plugins.arms.memory.keys import DEFAULT_STOPWORDS, NameSource, near_key, query_key
from ltrr_plugins.arms.memory.predictions import (ENTITIES, KEYS, NEAR, NEAR_KEYS,
                                                  NEAR_STARTS, SCORES, STARTS, Predictions)
from ltrr_plugins.arms.memory.store import _ENTITIES, _LN2, _S, _T, _W, DAY, LearnedStore


_FUZZY_CACHE = 10_000        # fuzzy lookups remembered (cleared when learning adds keys)


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


_MATCH = {0: "exact", 1: "near", 2: "fuzzy", -1: "none"}


class MemoryArm(Predictions, LearnedStore, Arm, Indexed, Learner):
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

    @classmethod
    def tables(cls, params: MemoryParams) -> list[TableUse]:
        columns = [ColumnUse(params.name.column, ("name", "column"), "text")] \
            if params.name else []
        columns += [ColumnUse(a.column, ("attributes", i, "column"), "text")
                    for i, a in enumerate(params.attributes)]
        if params.popularity:
            columns.append(ColumnUse(params.popularity, ("popularity",), "number"))
        return [TableUse(tuple(columns))]

    # --- cold start -------------------------------------------------------------------

    def state_key(self) -> dict[str, Any]:
        p = self.params
        return {"format": 2, "stopwords": sorted(p.stopwords),
                "name": p.name.model_dump(mode="json") if p.name else None,
                "attributes": [a.model_dump(mode="json") for a in p.attributes],
                "popularity": p.popularity, "popularity_log": p.popularity_log}

    def open(self) -> None:

        p = self.params
        self._stop = frozenset(p.stopwords)
        self._k = float(p.prior_strength)
        self._lam = _LN2 / (p.half_life_days * DAY)   # decay rate per second
        self._lock = threading.Lock()                  # serialises learn() calls
        self._fuzzy_cache: dict[str, tuple[str, float] | None] = {}
        # predictions, mapped: key → its run of (entity, score), best first
        state = self.ctx.state_dir
        self.has_predictions = (state / STARTS).exists()
        self._pred_keys = self._pred_near_keys = None
        if self.has_predictions:
            from ltrr.mapped import Vocabulary, map_array, map_arrow

            try:
                self._pred_keys = Vocabulary.open(state, KEYS)
                self._pred_starts = map_array(state / STARTS)
                self._pred_entities = map_arrow(state / ENTITIES).column("entity_id")
                self._pred_scores = map_array(state / SCORES)
                self._pred_near_keys = Vocabulary.open(state, NEAR)
                self._near_starts = map_array(state / NEAR_STARTS)
                self._near_members = map_array(state / NEAR_KEYS)
                if (len(self._pred_starts) != len(self._pred_keys) + 1
                        or self._pred_starts[-1] != len(self._pred_entities)
                        or len(self._pred_scores) != len(self._pred_entities)
                        or len(self._near_starts) != len(self._pred_near_keys) + 1):
                    raise ValueError("its files disagree")
            except (OSError, ValueError) as exc:
                raise StateError(f"memory predictions in {state} are unreadable: {exc}",
                                 node=self.ctx.node_id,
                                 hint="rebuild them with `ltrr index <spec> --force`") from exc
        # learned state
        self._pairs = self._read_learned()
        self._learned: dict[str, tuple] = {}
        self._t_now = 0.0
        self._update_learned(self._pairs)
        self._learned_near = self._near_index(self._learned)
        self._buckets = self._fuzzy_buckets()     # of learned keys; predicted ones mapped

    def _near_index(self, keys) -> dict[str, tuple[str, ...]]:
        """Near-duplicate key → the exact keys sharing it (the canonical one first)."""
        near: dict[str, list[str]] = {}
        for key in keys:
            near.setdefault(near_key(key, self._stop), []).append(key)
        return {n: tuple(sorted(v, key=lambda k, n=n: k != n)) for n, v in near.items()}

    @classmethod
    def _near(cls, index: dict[str, tuple[str, ...]], nk: str) -> tuple[str, ...]:
        return cls._near_of(index.get(nk, ()), nk)

    @staticmethod
    def _near_of(keys: tuple[str, ...], nk: str) -> tuple[str, ...]:
        """The exact keys to use for a near-duplicate key: the key equal to it when there
        is one ("rock music" → "rock", not also "the rock"), else all of them."""
        return keys[:1] if keys and keys[0] == nk else keys

    def _fuzzy_buckets(self) -> dict[tuple[str, int], list[str]]:
        """Learned near keys by (first character, length): the fuzzy fallback's blocking
        (the predicted ones are found in their mapped vocabulary)."""
        buckets: dict[tuple[str, int], list[str]] = {}
        if self.params.fuzzy_threshold >= 100:
            return buckets
        for nk in sorted(self._learned_near):
            if len(nk) >= self.params.fuzzy_min_chars:
                buckets.setdefault((nk[0], len(nk)), []).append(nk)
        return buckets

    def _pred_span(self, key: str) -> tuple[int, int] | None:
        """Where the predictions of ``key`` lie in the mapped runs (None: no key)."""
        if self._pred_keys is None:
            return None
        i = self._pred_keys.id(key)
        return None if i < 0 else (int(self._pred_starts[i]), int(self._pred_starts[i + 1]))

    def _pred_near(self, nk: str) -> tuple[str, ...]:
        """The predicted keys whose near-duplicate key is ``nk`` (the one equal first)."""
        if self._pred_near_keys is None:
            return ()
        j = self._pred_near_keys.id(nk)
        if j < 0:
            return ()
        a, b = int(self._near_starts[j]), int(self._near_starts[j + 1])
        return tuple(self._pred_keys.key(int(i)) for i in self._near_members[a:b])

    def _pred_run(self, span: tuple[int, int], k: int | None = None
                  ) -> tuple[list[str], list[float]]:
        """Entity ids and scores of a run of predictions (its first ``k``)."""
        s, e = span
        if k is not None:
            e = min(e, s + k)
        return (self._pred_entities.slice(s, e - s).to_pylist(),
                self._pred_scores[s:e].tolist())

    def _predicted(self, keys: tuple[str, ...]) -> dict[str, float]:
        """Entity → predicted score over keys (max when several near-duplicates match)."""
        out: dict[str, float] = {}
        for key in keys:
            span = self._pred_span(key)
            if span is None:
                continue
            for e, score in zip(*self._pred_run(span)):
                if score > out.get(e, -1.0):
                    out[e] = score
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
        pkeys: tuple[str, ...] = (key,) if self._pred_span(key) is not None else ()
        if not lkeys and not pkeys:                     # exact key unknown: near-duplicates
            nk = near_key(key, self._stop)
            lkeys = self._near(self._learned_near, nk)
            pkeys = self._near_of(self._pred_near(nk), nk)
            match = 1
            if not lkeys and not pkeys:                 # then the fuzzy fallback
                found = self._fuzzy(nk)
                if found is None:
                    return [], 0.0, -1
                nk, sim = found
                lkeys = self._near(self._learned_near, nk)
                pkeys = self._near_of(self._pred_near(nk), nk)
                match = 2
        floor = self.params.min_score
        if not lkeys:                                   # predictions only
            if len(pkeys) == 1:                         # already sorted: slice
                ents, sc = self._pred_run(self._pred_span(pkeys[0]), k)
                return ([(e, p * sim, p) for e, p in zip(ents, sc) if p * sim > floor],
                        0.0, match)
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
        for length in range(max(lo, self.params.fuzzy_min_chars), hi + 1):
            block = set(buckets.get((first, length), ()))
            if self._pred_near_keys is not None:
                block.update(k for k, _ in self._pred_near_keys.starting(length, first))
            choices += sorted(block)
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

    def evidence_batch(self, contexts) -> list[dict[str, float | str]]:
        """Per query: how the memory matched it (``match``: exact, near, fuzzy, none),
        the feedback behind it (``evidence``: log1p of the decayed weight, 0 for
        predictions alone) and its best entity's score (``top``) — the lookups
        ``retrieve_batch`` makes, without building candidates."""
        out = []
        for c in contexts:
            ranked, evidence, match = self.scores(c.query.text, 1)
            out.append({"match": _MATCH[match], "evidence": round(math.log1p(evidence), 4),
                        "top": round(ranked[0][1], 4) if ranked else 0.0})
        return out

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
