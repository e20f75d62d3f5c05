"""``dictionary`` slotter: maps query spans to catalog values, exactly or fuzzily.

For each declared slot (``tag`` → the ``tags`` column, ``artist`` → ``name``) it
builds a vocabulary of normalised values; a query's word n-grams are looked up
exactly, then fuzzily (rapidfuzz ratio), and the longest non-overlapping matches
become :class:`~ltrr.types.Slot` s.

The vocabulary is built by ``ltrr index`` and memory-mapped when the slotter opens
(:class:`ltrr.mapped.Vocabulary`): open is near-instant at any catalog size and every
serving process shares the pages. A vocabulary of at most ``fuzzy_scan_keys`` keys is
searched fuzzily in full (each span against every key of a compatible length); a
larger one (millions of names) only among the keys sharing the span's first or last
third, each a walk of the mapped trie: any one typo (a character deleted, added,
replaced, or two neighbours swapped) is still found, and two unless one is near each
end. On the 4,794 Last.fm queries and typo variants of tests/test_slotter_bounds.py,
searching that way changes the slots of 34 (0.7 %), all spans with two typos.

The work per query is bounded whatever its length: only the first ``max_words`` words
are slotted (at most ``max_words × max_ngram`` exact lookups) and at most
``max_fuzzy_spans`` spans are compared fuzzily with the vocabulary (each with the keys
of a compatible length, at most the whole vocabulary). Below the caps the work grows
linearly with the number of words. A 1,000-character query of two-letter words cost
993 fuzzy lookups (~400 ms on the Last.fm catalog) before the caps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pydantic import Field

from ltrr.components import ColumnUse, Indexed, Params, PlanView, Problem, Slotter, TableUse
from ltrr.errors import StateError
from ltrr.tables import column
from ltrr.hookspecs import hookimpl
from ltrr.text import WORD, normalize
from ltrr.types import TYPE_SLOT, Query, Slot

class SlotSource(Params):
    column: str = Field(description="Catalog column holding the values (string or list).")
    entity: bool = Field(False, description="Values name single entities (e.g. artist names).")
    min_count: int = Field(1, ge=1, description="Ignore values seen on fewer entities.")
    min_chars: int = Field(2, ge=1, description="Ignore values shorter than this.")
    exclude: list[str] = Field(default_factory=list, description=(
        "Values of this column never slotted (compared normalised): e.g. a tag that names "
        "the domain itself ('movies', 'music'), which would seed everything."))


class DictionaryParams(Params):
    slots: dict[str, SlotSource] = Field(min_length=1, description="Slot name → source column.")
    fuzzy_threshold: float = Field(88.0, ge=0, le=100, description=(
        "Minimum rapidfuzz ratio (0-100) for a fuzzy match; 100 disables fuzzy matching."))
    fuzzy_min_chars: int = Field(5, ge=1, description="Only spans this long are matched fuzzily.")
    max_ngram: int = Field(4, ge=1, le=10, description="Longest span, in words.")
    stopwords: list[str] = Field(default_factory=list, description=(
        "Words that never make a slot on their own: a span of the query made only of them "
        "is not slotted, exactly or fuzzily (e.g. the, of, movies, film). Default: none."))
    articles: list[str] = Field(default_factory=list, description=(
        "Leading articles a value is also found without ('The Matrix' by 'matrix'); a "
        "trailing one after a comma is read as leading ('Godfather, The' by 'the "
        "godfather' and 'godfather'). E.g. [the, a, an]. Default: none."))
    max_words: int = Field(32, ge=1, le=1000, description=(
        "Only the first this many words of a query are slotted; the rest are ignored "
        "(bounds the exact lookups to max_words × max_ngram)."))
    fuzzy_scan_keys: int = Field(200_000, ge=0, description=(
        "A vocabulary of at most this many keys is searched fuzzily in full (a span "
        "against every key of a compatible length); a larger one only among the keys "
        "sharing the span's first or last third, which finds any single typo in a "
        "fraction of a millisecond at millions of keys (two typos, one near each end, "
        "are missed)."))
    max_fuzzy_spans: int = Field(16, ge=0, le=1000, description=(
        "At most this many distinct spans per query are compared fuzzily, longer spans "
        "first, then in text order; 0 disables fuzzy matching. The Last.fm queries and "
        "their typo variants need at most 13."))
    types: dict[str, list[str]] = Field(default_factory=dict, description=(
        "A typed catalog: words or phrases that ask for an entity type, e.g. {station: "
        "[radio, station, stations]}. Each one found (exactly, normalised, even inside "
        "another slot's span) adds a slot `type` with that type as value and entity "
        "type: a type intent the policy's slot features see (`type_exact_station`)."))


VOCAB = "vocab"            # the keys (ltrr.mapped.Vocabulary)
ENTRIES = "entries.arrow"  # per key id, its (slot, value, entity_id) entries
STARTS = "starts.npy"      # key id → first row of its entries (CSR offsets)
RANKS = "ranks.npy"        # key id → its rank in catalog order (fuzzy ties)


class DictionarySlotter(Slotter, Indexed):
    """Finds catalog values (tags, names) in the query, with fuzzy matching."""

    name = "dictionary"
    reads_user = False
    Params = DictionaryParams
    open_unindexed = True        # before `ltrr index`, the vocabulary is built at open

    @classmethod
    def check(cls, params: DictionaryParams, plan: PlanView) -> list[Problem]:
        problems = []
        if params.types and TYPE_SLOT in params.slots:
            problems.append(Problem(f"slot '{TYPE_SLOT}' is taken by the type intents",
                                    ("slots", TYPE_SLOT), hint="rename this slot"))
        for t, words in params.types.items():
            if p := plan.unknown_type(t, ("types", t), "types"):
                problems.append(p)
            for i, w in enumerate(words):
                if not normalize(w):
                    problems.append(Problem(f"'{w}' has no word to match", ("types", t, i),
                                            hint="give a word or phrase"))
        return problems

    @classmethod
    def tables(cls, params: DictionaryParams) -> list[TableUse]:
        return [TableUse(tuple(ColumnUse(src.column, ("slots", slot, "column"), "text")
                               for slot, src in params.slots.items()))]

    def state_key(self) -> dict[str, Any]:
        p = self.params
        return {"format": 1, "slots": {k: v.model_dump(mode="json") for k, v in p.slots.items()},
                "stopwords": p.stopwords, "articles": p.articles}

    def build(self, out_dir: Path, progress: Callable[[int, int], None]) -> dict[str, Any]:
        import numpy as np
        import pyarrow as pa

        from ltrr.mapped import Vocabulary, write_arrow

        import polars as pl

        frame = self.ctx.catalog.frame
        self._stop = frozenset(normalize(w) for w in self.params.stopwords)
        articles = [a for a in (normalize(w) for w in self.params.articles) if a]
        parts = []
        for code, (slot, src) in enumerate(self.params.slots.items()):
            parts.append(self._slot_entries(frame, slot, src, articles).with_columns(
                pl.lit(code, dtype=pl.UInt8).alias("slot")))
            progress(code + 1, len(self.params.slots) + 1)
        # the keys in the order they first appear (slot by slot), each with its entries
        entries = pl.concat(parts).with_row_index("at")
        keys = entries["key"].unique(maintain_order=True).to_list()
        key_ids = Vocabulary.write(out_dir, VOCAB, keys)
        ids = pl.DataFrame({"key": keys, "kid": key_ids}, schema={"key": pl.String,
                                                                  "kid": pl.Int64})
        entries = entries.join(ids, on="key").sort("kid", "at")
        sizes = entries.group_by("kid").len().sort("kid")["len"].to_numpy()
        starts = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(sizes, out=starts[1:])
        write_arrow(out_dir / ENTRIES, pa.table({
            "slot": entries["slot"].to_arrow(),
            "value": entries["value"].to_arrow().cast(pa.string()),
            "entity_id": entries["entity"].to_arrow().cast(pa.string())}))
        np.save(out_dir / STARTS, starts)
        ranks = np.empty(len(keys), dtype=np.int32)
        ranks[key_ids] = np.arange(len(keys), dtype=np.int32)
        np.save(out_dir / RANKS, ranks)
        progress(1, 1)
        rows = entries.height
        return {"keys": len(keys), "entries": rows}

    def _slot_entries(self, frame, slot: str, src: SlotSource, articles: list[str]):
        """One slot's vocabulary as (key, value, entity id) rows, in the order the keys
        first appear in the catalog: each value's keys (:func:`_keys`, each distinct value
        normalised once), counted over the catalog's values, the first value and entity
        naming each key kept."""
        import polars as pl

        cells = column(frame, src.column, node=self.ctx.node_id,
                       field=f"with.slots.{slot}.column")
        long = pl.DataFrame({"entity": frame[self.ctx.catalog.id_column], "value": cells})
        if long["value"].dtype == pl.List:
            long = long.explode("value")
        long = long.with_columns(pl.col("value").cast(pl.String)).filter(
            pl.col("value").is_not_null() & (pl.col("value") != ""))
        excluded = {normalize(str(v)) for v in src.exclude}
        pairs: tuple[list[str], list[str]] = ([], [])      # (value, key), flat
        for v in long["value"].unique().to_list():
            for k in _keys(v, articles):
                if len(k) >= src.min_chars and k not in excluded and not self._stopped(k):
                    pairs[0].append(v)
                    pairs[1].append(k)
        keys_of = pl.DataFrame({"value": pairs[0], "key": pairs[1]},
                               schema={"value": pl.String, "key": pl.String})
        long = long.join(keys_of, on="value", how="inner", maintain_order="left_right")
        counts = long.group_by("key").len()
        keep = counts.filter(pl.col("len") >= src.min_count)["key"]
        first = long.group_by("key", maintain_order=True).first()
        first = first.filter(pl.col("key").is_in(keep.implode()))
        entity = pl.col("entity") if src.entity else pl.lit(None, dtype=pl.String)
        return first.select("key", "value", entity.alias("entity"))

    def open(self) -> None:
        from rapidfuzz import fuzz, process

        from ltrr.mapped import Vocabulary, map_array, map_arrow

        self._fuzz, self._process = fuzz, process
        self._stop = frozenset(normalize(w) for w in self.params.stopwords)
        state = self.unindexed_state()
        try:
            self._vocab = Vocabulary.open(state, VOCAB)
            self._starts, self._ranks = map_array(state / STARTS), map_array(state / RANKS)
            entries = map_arrow(state / ENTRIES)
            if len(self._starts) != len(self._vocab) + 1 or len(self._ranks) != len(
                    self._vocab) or self._starts[-1] != entries.num_rows:
                raise ValueError("its files disagree")
        except (OSError, ValueError) as exc:
            raise StateError(f"slotter vocabulary in {state} is unreadable: {exc}",
                             node=self.ctx.node_id,
                             hint="rebuild it with `ltrr index --force`") from exc
        self._entry_slot = entries.column("slot")
        self._entry_value = entries.column("value")
        self._entry_entity = entries.column("entity_id")
        self._slot_names = list(self.params.slots)
        self._intents = {normalize(w): t for t, words in self.params.types.items()
                         for w in words if normalize(w)}
        self._scan = len(self._vocab) <= self.params.fuzzy_scan_keys
        if self._scan:
            # keys sorted by length, then catalog order: a fuzzy span is compared only
            # with the keys whose length allows its ratio to reach the threshold
            import numpy as np

            items = sorted(self._vocab.items(), key=lambda kv: (len(kv[0]),
                                                                 int(self._ranks[kv[1]])))
            self._by_len = [k for k, _ in items]
            self._by_len_rank = np.asarray([self._ranks[i] for _, i in items],
                                           dtype=np.int64)
            self._lengths = np.asarray([len(k) for k in self._by_len], dtype=np.int64)

    def _find(self, key: str) -> int:
        """The vocabulary id of ``key``, -1 if it is not a key."""
        return self._vocab.id(key)

    def _entries(self, key_id: int) -> list[tuple[str, str, str | None]]:
        """(slot, value, entity id) of each entry of a key."""
        a, b = int(self._starts[key_id]), int(self._starts[key_id + 1])
        names = self._slot_names
        return [(names[c], v, e) for c, v, e in zip(
            self._entry_slot.slice(a, b - a).to_pylist(),
            self._entry_value.slice(a, b - a).to_pylist(),
            self._entry_entity.slice(a, b - a).to_pylist())]

    def _stopped(self, key: str) -> bool:
        """Whether ``key`` is made only of stopwords."""
        return bool(self._stop) and all(w in self._stop for w in key.split())

    def _fuzzy_best(self, key: str) -> tuple[str, float] | None:
        """The vocabulary key most similar to ``key`` (rapidfuzz ratio ≥ the threshold;
        ties go to the key first in catalog order), with its score in [0, 1]; None if
        none reaches it.

        ratio(a, b) ≤ 200·min(|a|, |b|) / (|a| + |b|), so only keys of length within
        [n·t / (200 − t), n·(200 − t) / t] can reach threshold t: a contiguous slice of
        the length-sorted keys (a vocabulary of at most ``fuzzy_scan_keys``), or the
        keys of those lengths sharing the span's first or last third (a larger one)."""
        import math

        import numpy as np

        t = self.params.fuzzy_threshold
        n = len(key)
        lo_len, hi_len = n * t / (200.0 - t) - 1e-9, n * (200.0 - t) / t + 1e-9
        if self._scan:
            lo = np.searchsorted(self._lengths, lo_len, side="left")
            hi = np.searchsorted(self._lengths, hi_len, side="right")
            if hi <= lo:
                return None
            keys, ranks = self._by_len[lo:hi], self._by_len_rank[lo:hi]
        else:
            found: dict[int, str] = {}
            head, tail = key[:max(n // 3, 2)], key[n - max(n // 3, 2):]
            for length in range(max(math.ceil(lo_len), 1), math.floor(hi_len) + 1):
                if head:
                    found.update((i, k) for k, i in self._vocab.starting(length, head))
                if tail:
                    found.update((i, k) for k, i in self._vocab.ending(length, tail))
            if not found:
                return None
            keys = list(found.values())
            ranks = self._ranks[np.fromiter(found, dtype=np.int64, count=len(found))]
        row = self._process.cdist([key], keys, scorer=self._fuzz.ratio,
                                  score_cutoff=t, workers=1)[0]
        top = row.max()
        if top <= 0:
            return None
        best = int(np.flatnonzero(row == top)[np.argmin(ranks[row == top])])
        return keys[best], float(top) / 100.0

    def slot_batch(self, queries: list[Query]) -> list[list[Slot]]:
        return [self._slot(q.text) for q in queries]

    def _slot(self, text: str) -> list[Slot]:
        words = []
        for m in WORD.finditer(text):
            if len(words) == self.params.max_words:
                break
            if key := normalize(m.group(0)):
                words.append((m.start(), m.end(), key))
        exact = []   # (n_words, i, j, key)
        fuzzy: dict[int, list[tuple[int, int, str]]] = {}   # n_words → spans
        fuzzy_ok = self.params.fuzzy_threshold < 100
        for i in range(len(words)):
            for j in range(i + 1, min(len(words), i + self.params.max_ngram) + 1):
                key = " ".join(w[2] for w in words[i:j])
                if self._stopped(key):
                    continue
                if self._find(key) >= 0:
                    exact.append((j - i, i, j, key))
                elif fuzzy_ok and len(key) >= self.params.fuzzy_min_chars:
                    fuzzy.setdefault(j - i, []).append((i, j, key))
        # Exact matches beat fuzzy ones of any length; then longer spans, better scores,
        # earlier spans. A span overlapping one already taken is dropped, so the fuzzy
        # spans are scored lazily, longest first, skipping those that could no longer be
        # taken: the costly fuzzy lookups run only where a match can still land.
        exact.sort(key=lambda m: (-m[0], m[1]))
        taken = [False] * len(words)
        chosen: list[tuple[int, int, str, float]] = []

        def take(i: int, j: int, key: str, score: float) -> None:
            if not any(taken[i:j]):
                taken[i:j] = [True] * (j - i)
                chosen.append((i, j, key, score))

        for _, i, j, key in exact:
            take(i, j, key, 1.0)
        budget = self.params.max_fuzzy_spans
        best_of: dict[str, tuple[str, float] | None] = {}   # a repeated span is looked up once
        for n in sorted(fuzzy, reverse=True):
            found = []
            for i, j, key in fuzzy[n]:
                if any(taken[i:j]):
                    continue
                if key not in best_of:
                    if budget == 0:
                        continue
                    budget -= 1
                    best_of[key] = self._fuzzy_best(key)
                if (best := best_of[key]) is not None:
                    found.append((-best[1], i, j, best[0]))
            for neg_score, i, j, key in sorted(found):
                take(i, j, key, -neg_score)
        slots: list[Slot] = []
        for i, j, key, score in chosen:
            start, end = words[i][0], words[j - 1][1]
            for slot, value, entity in self._entries(self._find(key)):
                slots.append(Slot(slot, value, start, end, score, entity))
        if self._intents:
            slots.extend(self._type_intents(words))
        slots.sort(key=lambda s: s.start)
        return slots

    def _type_intents(self, words: list[tuple[int, int, str]]) -> list[Slot]:
        """A ``type`` slot per span naming an entity type (``radio`` → station), each
        type once (its longest, then first span)."""
        found: dict[str, Slot] = {}
        for n in range(min(self.params.max_ngram, len(words)), 0, -1):
            for i in range(len(words) - n + 1):
                t = self._intents.get(" ".join(w[2] for w in words[i:i + n]))
                if t is not None and t not in found:
                    found[t] = Slot(TYPE_SLOT, t, words[i][0], words[i + n - 1][1], 1.0,
                                    None, t)
        return list(found.values())


def _keys(value: str, articles: list[str]) -> list[str]:
    """The normalised keys a value is found by: itself; with ``articles``, also without a
    leading article, and a trailing one after a comma moved to the front."""
    key = normalize(value)
    keys = [key]
    if not articles or not key:
        return keys
    head, comma, tail = value.rpartition(",")
    if comma and normalize(tail) in articles and normalize(head):
        key = f"{normalize(tail)} {normalize(head)}"      # "Godfather, The" → "the godfather"
        keys = [key]
    first, _, rest = key.partition(" ")
    if rest and first in articles:
        keys.append(rest)
    return keys


@hookimpl
def ltrr_components():
    return [DictionarySlotter]
