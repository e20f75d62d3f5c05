"""Built-in components on small data: dictionary slotter, static policy, mergers, ranker."""

from __future__ import annotations

import polars as pl
import pytest

from ltrr.catalog import Catalog
from ltrr.components import ComponentContext, PlanView
from ltrr.types import Candidate, Merged, PolicyContext, Query
from ltrr_plugins.mergers.rrf import RrfMerger, RrfParams
from ltrr_plugins.mergers.union import UnionMerger
from ltrr_plugins.policies.static import StaticParams, StaticPolicy
from ltrr_plugins.rankers.score import ScoreRanker
from ltrr_plugins.slotters.dictionary import DictionaryParams, DictionarySlotter, normalize

VIEW = PlanView(arms=("lexical", "memory"), slotters=(), budget=100, output_k=10,
                arm_max_k={"lexical": 1000, "memory": 50})


@pytest.fixture()
def catalog(tmp_path) -> Catalog:
    pl.DataFrame({
        "id": ["1", "2", "3", "4", "5"],
        "name": ["Metallica", "Daft Punk", "Beyoncé", "Iron Maiden", "Punk Rock Band"],
        "tags": [["heavy metal", "thrash metal"], ["french house", "electronic"],
                 ["pop", "r&b"], ["heavy metal"], ["punk"]],
    }).write_parquet(tmp_path / "c.parquet")
    return Catalog(tmp_path / "c.parquet")


def ctx(catalog: Catalog, node: str = "n") -> ComponentContext:
    return ComponentContext(node, catalog.path.parent / node, catalog.path.parent,
                            lambda: catalog, VIEW)


def slotter(catalog, **params) -> DictionarySlotter:
    params.setdefault("slots", {"tag": {"column": "tags"},
                                "artist": {"column": "name", "entity": True}})
    s = DictionarySlotter(DictionaryParams.model_validate(params), ctx(catalog))
    s.ctx.state_dir.mkdir(parents=True, exist_ok=True)
    s.build(s.ctx.state_dir, lambda *_: None)
    s.open()
    return s


def found(s: DictionarySlotter, text: str) -> list[tuple[str, str, str | None]]:
    return [(x.name, x.value, x.entity_id) for x in s.slot_batch([Query("r", text)])[0]]


def test_normalize_folds_case_accents_and_punctuation():
    assert normalize("  BEYONCÉ!! ") == "beyonce"
    assert normalize("R&B / Soul") == "r b soul"


def test_dictionary_finds_exact_tags_and_entities(catalog):
    s = slotter(catalog)
    assert found(s, "heavy metal like Metallica") == [
        ("tag", "heavy metal", None), ("artist", "Metallica", "1")]
    assert found(s, "beyonce") == [("artist", "Beyoncé", "3")]


def test_dictionary_prefers_the_longest_span(catalog):
    s = slotter(catalog)
    # "punk rock band" (an artist) wins over "punk" (a tag) inside it
    assert found(s, "punk rock band live") == [("artist", "Punk Rock Band", "5")]


def test_dictionary_fuzzy_matches_misspellings_with_a_lower_score(catalog):
    s = slotter(catalog)
    slots = s.slot_batch([Query("r", "metalica")])[0]
    assert [(x.value, x.entity_id) for x in slots] == [("Metallica", "1")]
    assert 0.88 <= slots[0].score < 1.0
    assert (slots[0].start, slots[0].end) == (0, 8)
    assert found(slotter(catalog, fuzzy_threshold=100), "metalica") == []


def test_dictionary_looks_up_fuzzily_only_spans_that_can_still_be_taken(catalog):
    s = slotter(catalog)
    looked: list[str] = []
    best = s._fuzzy_best
    s._fuzzy_best = lambda key: looked.append(key) or best(key)
    # an exact artist over every word: no fuzzy lookup is needed
    assert found(s, "punk rock band") == [("artist", "Punk Rock Band", "5")]
    assert looked == []
    # "iron maidn" matches fuzzily as a whole: its single words are never looked up
    assert found(s, "iron maidn") == [("artist", "Iron Maiden", "4")]
    assert looked == ["iron maidn"]
    # the exact tag takes its words; only the spans beside it are looked up
    looked.clear()
    assert found(s, "heavy metal metalica") == [("tag", "heavy metal", None),
                                                ("artist", "Metallica", "1")]
    assert looked == ["metalica"]


def test_dictionary_min_count_drops_rare_values(catalog):
    s = slotter(catalog, slots={"tag": {"column": "tags", "min_count": 2}})
    assert found(s, "heavy metal thrash metal") == [("tag", "heavy metal", None)]


@pytest.fixture()
def movies(tmp_path) -> Catalog:
    pl.DataFrame({
        "id": ["1", "2", "3", "4"],
        "title": ["Heat", "Matrix, The", "The Godfather", "Movies of the Year"],
        "tags": [["movies", "heist"], ["movies", "cyberpunk"], ["movies", "mafia"],
                 ["documentary"]],
    }).write_parquet(tmp_path / "m.parquet")
    return Catalog(tmp_path / "m.parquet")


def test_dictionary_excluded_values_and_stopword_spans_are_never_slotted(movies):
    """In "movies like heat", "movies" matched a tag every movie carries (issue 13)."""
    slots = {"tag": {"column": "tags"}, "title": {"column": "title", "entity": True}}
    plain = slotter(movies, slots=slots)
    assert ("tag", "movies", None) in found(plain, "movies like heat")
    tidy = slotter(movies, slots={"tag": {"column": "tags", "exclude": ["Movies"]},
                                  "title": slots["title"]}, stopwords=["of", "the", "movie"])
    assert found(tidy, "movies like heat") == [("title", "Heat", "1")]
    assert found(tidy, "the movie") == []                 # only stopwords: no fuzzy "movies"
    assert found(tidy, "movies of the year") == [("title", "Movies of the Year", "4")]


def test_dictionary_articles_find_titles_without_them(movies):
    slots = {"title": {"column": "title", "entity": True}}
    plain = slotter(movies, slots=slots)
    assert found(plain, "matrix") == [] and found(plain, "godfather") == []
    s = slotter(movies, slots=slots, articles=["the", "a", "an"])
    assert found(s, "matrix") == [("title", "Matrix, The", "2")]
    assert found(s, "the matrix") == [("title", "Matrix, The", "2")]
    assert found(s, "godfather") == [("title", "The Godfather", "3")]
    assert found(s, "godfater") == [("title", "The Godfather", "3")]      # fuzzy, too
    assert found(s, "heat") == [("title", "Heat", "1")]


def test_dictionary_unknown_column_names_node_and_field(catalog):
    with pytest.raises(Exception) as err:
        slotter(catalog, slots={"genre": {"column": "genres"}})
    assert "node 'n'" in str(err.value) and "with.slots.genre.column" in str(err.value)


def test_static_policy_default_split_and_checks(catalog):
    p = StaticPolicy(StaticParams(), ctx(catalog))
    p.open()
    (action,) = p.choose_batch([PolicyContext(Query("r", "x"), [])])
    assert action.allocation == {"lexical": 50, "memory": 50}
    assert action.probability == 1.0 and action.pmf == [(action.allocation, 1.0)]
    problems = StaticPolicy.check(StaticParams(allocation={"lexical": 90, "memory": 60,
                                                           "dense": 5}), VIEW)
    messages = [p.message for p in problems]
    assert any("'dense', which is not an arm" in m for m in messages)
    assert any("allocates 60 to 'memory' but its max_k is 50" in m for m in messages)
    assert any("sums to 155, more than the budget 100" in m for m in messages)


def hits(arm: str, ids: list[str]) -> list[Candidate]:
    return [Candidate(e, arm, r, 10.0 - r) for r, e in enumerate(ids, 1)]


def test_union_dedupes_keeps_provenance_and_interleaves_by_rank(catalog):
    m = UnionMerger(None, ctx(catalog))
    out = m.merge({"lexical": hits("lexical", ["a", "b", "c"]),
                   "memory": hits("memory", ["c", "d"])}, k=10)
    # rank-1 hits first; among them, one found by more arms first
    assert [x.entity_id for x in out] == ["c", "a", "b", "d"]   # then arm order
    c = next(x for x in out if x.entity_id == "c")
    assert sorted((s.arm, s.rank) for s in c.sources) == [("lexical", 3), ("memory", 1)]
    assert len(out) == 4
    assert len(m.merge({"lexical": hits("lexical", list("abcdef"))}, k=3)) == 3


def test_rrf_sums_weighted_reciprocal_ranks(catalog):
    m = RrfMerger(RrfParams(k=60, weights={"memory": 2.0}), ctx(catalog))
    out = m.merge({"lexical": hits("lexical", ["a", "b"]),
                   "memory": hits("memory", ["b"])}, k=10)
    scores = {x.entity_id: x.score for x in out}
    assert scores["b"] == pytest.approx(1 / 62 + 2 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert [x.entity_id for x in out] == ["b", "a"]
    assert [p.path for p in RrfMerger.check(RrfParams(weights={"nope": 1.0}), VIEW)] == [
        ("weights", "nope")]


def test_score_ranker_orders_by_fused_score_and_cuts_at_k(catalog):
    r = ScoreRanker(None, ctx(catalog))
    merged = [Merged("a", 0.1, []), Merged("b", 0.9, []), Merged("c", 0.5, [])]
    out = r.rank(Query("r", "x"), merged, k=2)
    assert [(x.rank, x.entity_id) for x in out] == [(1, "b"), (2, "c")]


def test_weighted_fusion_normalises_each_arm_then_weights(catalog):
    from ltrr_plugins.mergers.weighted import WeightedMerger, WeightedParams, normalized

    lexical = [Candidate("a", "lexical", 1, 30.0), Candidate("b", "lexical", 2, 10.0)]
    dense = [Candidate("b", "dense", 1, 0.9), Candidate("c", "dense", 2, 0.5),
             Candidate("d", "dense", 3, 0.1)]
    m = WeightedMerger(WeightedParams(weights={"dense": 2.0}), ctx(catalog))
    scores = {x.entity_id: x.score for x in m.merge({"lexical": lexical, "dense": dense}, 10)}
    # minmax: lexical a=1, b=0; dense b=1, c=0.5, d=0 (x2)
    assert scores == pytest.approx({"a": 1.0, "b": 2.0, "c": 1.0, "d": 0.0})
    z = normalized([1.0, 2.0, 3.0], WeightedParams(normalize="zscore").normalize)
    assert z == pytest.approx([-1.2247449, 0.0, 1.2247449])
    assert normalized([5.0, 5.0], WeightedParams().normalize) == [1.0, 1.0]
    assert [p.path for p in WeightedMerger.check(WeightedParams(weights={"x": 1}), VIEW)] == [
        ("weights", "x")]
