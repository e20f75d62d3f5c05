"""The dictionary slotter's work per query is bounded and linear in the query's length
(issue 10, item 9: a 1,000-character query of two-letter words cost 400 ms), and the
bounds leave the slots of real queries unchanged.

Work is counted, not timed: exact span lookups (``key in _vocab``) and fuzzy
comparisons (vocabulary keys handed to ``rapidfuzz.process.cdist``). The music catalog's
vocabulary is searched fuzzily in full (below ``fuzzy_scan_keys``); the blocked search
of larger ones is checked against the full one in tests/test_mapped_vocabulary.py.

``tests/data/dictionary_lastfm_slots.json.gz`` holds the slots the slotter found, before
the bounds were added, for the 1,200 Last.fm queries and three typo variants of each;
``python tests/test_slotter_bounds.py`` rewrites it (only when the slotting rule is meant
to change).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from ltrr.catalog import Catalog
from ltrr.components import ComponentContext, PlanView
from ltrr.types import Query
from ltrr_plugins.slotters.dictionary import DictionaryParams, DictionarySlotter

ROOT = Path(__file__).resolve().parent.parent
LASTFM = ROOT / "examples" / "data" / "lastfm"
GOLDEN = Path(__file__).resolve().parent / "data" / "dictionary_lastfm_slots.json.gz"
# the slotter of pipelines/music.yaml
MUSIC = {"slots": {"tag": {"column": "tags", "min_count": 5, "min_chars": 3},
                   "artist": {"column": "name", "entity": True, "min_chars": 3}},
         "fuzzy_threshold": 88}


_BUILT: dict[str, Path] = {}      # the music vocabulary, built once per session


def music_slotter(**params) -> DictionarySlotter:
    import tempfile

    catalog = Catalog(LASTFM / "artists.parquet", id_column="artist_id")
    view = PlanView(arms=(), slotters=("understand",), budget=10, output_k=10, arm_max_k={})
    if "state" not in _BUILT:
        _BUILT["state"] = Path(tempfile.mkdtemp(prefix="ltrr-slotter-"))
    s = DictionarySlotter(DictionaryParams.model_validate({**MUSIC, **params}),
                          ComponentContext("understand", _BUILT["state"], ROOT,
                                           lambda: catalog, view))
    if not (_BUILT["state"] / "ranks.npy").exists():
        s.build(_BUILT["state"], lambda *_: None)
    s.open()
    return s


def typo_variants(text: str, rng: random.Random) -> list[str]:
    """A character deleted, two neighbours swapped, a character replaced."""
    if len(text) < 3:
        return []
    i = rng.randrange(len(text))
    j = rng.randrange(len(text) - 1)
    k = rng.randrange(len(text))
    return [text[:i] + text[i + 1:],
            text[:j] + text[j + 1] + text[j] + text[j + 2:],
            text[:k] + rng.choice("abcdefghijklmnopqrstuvwxyz") + text[k + 1:]]


def golden_queries() -> list[str]:
    rng = random.Random(10)
    queries = []
    for line in (LASTFM / "queries" / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["query"]
        queries += [text, *typo_variants(text, rng)]
    return queries


def slots_of(s: DictionarySlotter, texts: list[str]) -> list[list[list]]:
    return [[[x.name, x.value, x.start, x.end, round(x.score, 9), x.entity_id] for x in slots]
            for slots in s.slot_batch([Query(str(n), t) for n, t in enumerate(texts)])]


class Counted:
    """Counts the slotter's work: exact span lookups and fuzzy comparisons."""

    def __init__(self, s: DictionarySlotter):
        counter = self

        find = s._find

        def counted_find(key):
            counter.lookups += 1
            return find(key)

        class Process:
            def cdist(self, queries, choices, **kw):
                counter.fuzzy_spans += len(queries)
                counter.comparisons += len(queries) * len(choices)
                return process.cdist(queries, choices, **kw)

        process = s._process
        s._find, s._process = counted_find, Process()
        self.s, self.lookups, self.fuzzy_spans, self.comparisons = s, 0, 0, 0

    def run(self, text: str) -> tuple[int, int, int]:
        self.lookups = self.fuzzy_spans = self.comparisons = 0
        self.s.slot_batch([Query("r", text)])
        return self.lookups, self.fuzzy_spans, self.comparisons


def two_letter_words(n: int, seed: int = 9) -> str:
    """The attack of item 9: n random two-letter words (333 make 1,000 characters)."""
    rng = random.Random(seed)
    return " ".join(rng.choice("abcdefghijklmnopqrstuvwxyz") + rng.choice("aeiou")
                    for _ in range(n))


@pytest.fixture(scope="module")
def slotter() -> DictionarySlotter:
    return music_slotter()


def test_slotter_work_per_query_is_bounded_by_its_caps(slotter):
    p = slotter.params
    counted = Counted(music_slotter())
    vocab = len(counted.s._vocab)
    attack = two_letter_words(333)
    assert len(attack) == 998
    lookups, fuzzy, comparisons = counted.run(attack)
    assert lookups <= p.max_words * p.max_ngram
    assert 0 < fuzzy <= p.max_fuzzy_spans
    assert comparisons <= p.max_fuzzy_spans * vocab
    # the work stops growing once the caps are reached
    assert counted.run(two_letter_words(3330)) == counted.run(two_letter_words(2 * p.max_words))


def test_slotter_work_grows_linearly_below_the_caps():
    counted = Counted(music_slotter(max_words=1000, max_fuzzy_spans=1000))
    work = {n: counted.run(two_letter_words(n)) for n in (16, 32, 64, 128, 256)}
    for n in (16, 32, 64, 128):
        for small, large in zip(work[n], work[2 * n]):
            assert large <= 2.2 * small, (n, work[n], work[2 * n])


def test_slotter_caps_are_configurable_and_validated():
    counted = Counted(music_slotter(max_words=5, max_fuzzy_spans=2))
    lookups, fuzzy, _ = counted.run(two_letter_words(50))
    assert lookups <= 5 * 4 and fuzzy <= 2
    # words past max_words are not slotted
    assert [x.value for x in counted.s.slot_batch([Query("r", "a b c d e metallica")])[0]] == []
    assert [x.value for x in counted.s.slot_batch([Query("r", "a b c d metallica")])[0]] == [
        "Metallica"]
    for bad in ({"max_words": 0}, {"max_fuzzy_spans": -1}):
        with pytest.raises(ValueError):
            DictionaryParams.model_validate({**MUSIC, **bad})


def test_slotter_caps_leave_the_slots_of_real_queries_unchanged(slotter):
    with gzip.open(GOLDEN, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) > 4000 and sum(bool(r["slots"]) for r in rows) > 3000
    got = slots_of(slotter, [r["query"] for r in rows])
    changed = [(r["query"], r["slots"], g) for r, g in zip(rows, got) if g != r["slots"]]
    assert changed == []


if __name__ == "__main__":
    texts = golden_queries()
    rows = [{"query": t, "slots": sl} for t, sl in zip(texts, slots_of(music_slotter(), texts))]
    GOLDEN.parent.mkdir(exist_ok=True)
    with gzip.open(GOLDEN, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} queries, {sum(bool(r['slots']) for r in rows)} with slots → {GOLDEN}")
