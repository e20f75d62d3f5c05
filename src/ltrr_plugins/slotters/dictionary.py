"""``dictionary`` slotter: maps query spans to catalog values, exactly or fuzzily.

For each declared slot (``tag`` → the ``tags`` column, ``artist`` → ``name``) it
builds a vocabulary of normalised values; a query's word n-grams are looked up
exactly, then fuzzily (rapidfuzz ratio), and the longest non-overlapping matches
become :class:`~ltrr.types.Slot` s.

The work per query is bounded whatever its length: only the first ``max_words`` words
are slotted (at most ``max_words × max_ngram`` exact lookups) and at most
``max_fuzzy_spans`` spans are compared fuzzily with the vocabulary (each with the keys
of a compatible length, at most the whole vocabulary). Below the caps the work grows
linearly with the number of words. A 1,000-character query of two-letter words cost
993 fuzzy lookups (~400 ms on the Last.fm catalog) before the caps.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from ltrr.components import ColumnUse, Params, PlanView, Problem, Slotter, TableUse
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
    max_fuzzy_spans: int = Field(16, ge=0, le=1000, description=(
        "At most this many distinct spans per query are compared fuzzily, longer spans "
        "first, then in text order; 0 disables fuzzy matching. The Last.fm queries and "
        "their typo variants need at most 13."))
    types: dict[str, list[str]] = Field(default_factory=dict, description=(
        "A typed catalog: words or phrases that ask for an entity type, e.g. {station: "
        "[radio, station, stations]}. Each one found (exactly, normalised, even inside "
        "another slot's span) adds a slot `type` with that type as value and entity "
        "type: a type intent the policy's slot features see (`type_exact_station`)."))


@dataclass(slots=True)
class _Entry:
    slot: str
    value: str
    entity_id: str | None


class DictionarySlotter(Slotter):
    """Finds catalog values (tags, names) in the query, with fuzzy matching."""

    name = "dictionary"
    reads_user = False
    Params = DictionaryParams

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

    def open(self) -> None:
        from rapidfuzz import fuzz, process

        self._fuzz, self._process = fuzz, process
        frame = self.ctx.catalog.frame
        ids = self.ctx.catalog.ids
        self._vocab: dict[str, list[_Entry]] = {}
        self._stop = frozenset(normalize(w) for w in self.params.stopwords)
        articles = [a for a in (normalize(w) for w in self.params.articles) if a]
        for slot, src in self.params.slots.items():
            excluded = {normalize(str(v)) for v in src.exclude}
            cells = column(frame, src.column, node=self.ctx.node_id,
                           field=f"with.slots.{slot}.column").to_list()
            counts: dict[str, int] = {}
            canonical: dict[str, tuple[str, str | None]] = {}
            for entity, cell in zip(ids, cells):
                values = cell if isinstance(cell, list) else [cell]
                for v in values:
                    if not v:
                        continue
                    for key in _keys(str(v), articles):
                        if len(key) < src.min_chars or key in excluded or self._stopped(key):
                            continue
                        counts[key] = counts.get(key, 0) + 1
                        canonical.setdefault(key, (str(v), entity if src.entity else None))
            for key, (value, entity) in canonical.items():
                if counts[key] >= src.min_count:
                    self._vocab.setdefault(key, []).append(_Entry(slot, value, entity))
        self._keys = list(self._vocab)
        self._intents = {normalize(w): t for t, words in self.params.types.items()
                         for w in words if normalize(w)}
        # keys sorted by length (stable): a fuzzy span is compared only with the keys whose
        # length allows its ratio to reach the threshold (see _fuzzy_best)
        import numpy as np

        order = sorted(range(len(self._keys)), key=lambda k: len(self._keys[k]))
        self._by_len = [self._keys[k] for k in order]
        self._by_len_index = np.asarray(order, dtype=np.int64)
        self._lengths = np.asarray([len(k) for k in self._by_len], dtype=np.int64)

    def _stopped(self, key: str) -> bool:
        """Whether ``key`` is made only of stopwords."""
        return bool(self._stop) and all(w in self._stop for w in key.split())

    def _fuzzy_best(self, key: str) -> tuple[str, float] | None:
        """The vocabulary key most similar to ``key`` (rapidfuzz ratio ≥ the threshold;
        ties go to the earliest key), with its score in [0, 1]; None if none reaches it.

        ratio(a, b) ≤ 200·min(|a|, |b|) / (|a| + |b|), so only keys of length within
        [n·t / (200 − t), n·(200 − t) / t] can reach threshold t: a contiguous slice of
        the length-sorted keys, a fraction of the whole vocabulary."""
        import numpy as np

        t = self.params.fuzzy_threshold
        n = len(key)
        lo = np.searchsorted(self._lengths, n * t / (200.0 - t) - 1e-9, side="left")
        hi = np.searchsorted(self._lengths, n * (200.0 - t) / t + 1e-9, side="right")
        if hi <= lo:
            return None
        row = self._process.cdist([key], self._by_len[lo:hi], scorer=self._fuzz.ratio,
                                  score_cutoff=t, workers=1)[0]
        top = row.max()
        if top <= 0:
            return None
        col = int(self._by_len_index[lo:hi][row == top].min())   # earliest key in vocab order
        return self._keys[col], float(top) / 100.0

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
                if key in self._vocab:
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
            for e in self._vocab[key]:
                slots.append(Slot(e.slot, e.value, start, end, score, e.entity_id))
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
