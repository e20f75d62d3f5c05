"""Real Lucene (Anserini through pyjnius) tests for ``ltrr_plugins.arms.lucene``: no mocks."""

from __future__ import annotations

import pytest

from ltrr_plugins.arms import lucene

DOCS = [
    {"id": "n-apple", "name": "apple pie", "tags": ["dessert", "baking"]},
    {"id": "t-apple", "name": "cherry tart", "tags": ["apple", "dessert"]},
    {"id": "banana", "name": "banana bread", "tags": ["baking", "breakfast"]},
    {"id": "carrot", "name": "carrot cake", "tags": ["dessert", "vegetable"]},
    {"id": "soup", "name": "tomato soup", "tags": ["lunch", "vegetable"]},
    {"id": "salad", "name": "green salad", "tags": ["lunch", "healthy"]},
    {"id": "steak", "name": "grilled steak", "tags": ["dinner", "meat"]},
    {"id": "curry", "name": "chicken curry", "tags": ["dinner", "spicy"]},
    {"id": "xray", "name": "x ray scanner", "tags": ["device"]},
    {"id": "literal", "name": "query syntax sample", "tags": ["name:x", "or"]},
    {"id": "dup-b", "name": "plain toast", "tags": ["breakfast"]},
    {"id": "dup-a", "name": "plain toast", "tags": ["breakfast"]},
    {"id": "empty", "name": "", "tags": None},  # no text: skipped, as Anserini does
]
BOTH = {"name": 1.0, "tags": 1.0}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    path = tmp_path_factory.mktemp("lucene") / "index"
    seen: list[int] = []
    n = lucene.build_index(DOCS, path, ["name", "tags"], threads=2, progress=seen.append,
                           batch_size=5)
    return path, n, seen


@pytest.fixture(scope="module")
def searcher(index):
    with lucene.FieldedSearcher(index[0]) as s:
        yield s


def ids(hits):
    return [d for d, _ in hits]


def test_build_counts_and_progress(index, searcher):
    _, n, seen = index
    assert n == len(DOCS) - 1 == searcher.num_docs
    assert seen == [5, 10, 13]  # cumulative documents read
    assert searcher.fields == {"contents", "name", "tags"}


def test_field_boosts_change_ranking(searcher):
    name_first = searcher.search("apple", 10, {"name": 10.0, "tags": 1.0})
    tags_first = searcher.search("apple", 10, {"name": 1.0, "tags": 10.0})
    assert ids(name_first) == ["n-apple", "t-apple"]
    assert ids(tags_first) == ["t-apple", "n-apple"]
    assert ids(searcher.search("apple", 10, {"name": 1.0})) == ["n-apple"]
    assert ids(searcher.search("apple", 10, {"tags": 1.0})) == ["t-apple"]
    # a zero boost drops the field; scores scale with the boost
    assert ids(searcher.search("apple", 10, {"name": 0.0, "tags": 1.0})) == ["t-apple"]
    one = searcher.search("apple", 1, {"name": 1.0})[0][1]
    three = searcher.search("apple", 1, {"name": 3.0})[0][1]
    assert three == pytest.approx(3 * one, rel=1e-6)


def test_contents_is_all_fields(searcher):
    assert set(ids(searcher.search("apple", 10))) == {"n-apple", "t-apple"}
    assert set(ids(searcher.search("dessert", 10))) == {"n-apple", "t-apple", "carrot"}


@pytest.mark.parametrize("fields", [None, BOTH])
def test_lucene_syntax_is_plain_words(searcher, fields):
    # 'name:x' is one token for the analyzer and OR is a stopword: only the doc that
    # literally contains "name:x" matches, not every document.
    assert ids(searcher.search("name:x OR *:*", 100, fields)) == ["literal"]
    # operators alone are no words (parsed, `*:*`, `/.*/` or `NOT x` match everything)
    for text in ["*:*", "*", "AND", "OR", "NOT", "-", "+", "\\", '"unbalanced', "(((", ")",
                 "[a TO z]", "{a TO z}", "/.*/", "&& || !", "?", ":"]:
        assert searcher.search(text, 100, fields) == [], text
    # fuzzy and boost marks are separators: the word's own hits and scores, no more
    for text, words in [("apple~2", "apple 2"), ("apple^100", "apple 100")]:
        assert searcher.search(text, 100, fields) == searcher.search(words, 100, fields) != []
    assert ids(searcher.search('"apple', 100, fields)) == ids(searcher.search("apple", 100, fields))
    assert searcher.search("-apple", 100, fields) == searcher.search("apple", 100, fields)
    assert searcher.search("name:apple", 100, fields) == []  # one token, in no document


@pytest.mark.parametrize("fields", [None, BOTH])
def test_empty_and_unsearchable_queries(searcher, fields):
    for text in ["", "   ", "\t\n", "the and of", "!!!", "AND OR"]:
        assert searcher.search(text, 10, fields) == []
    assert searcher.search("apple", 0, fields) == []
    assert searcher.search_batch(["", "apple"], 10, fields) == [
        [], searcher.search("apple", 10, fields)]


def test_long_and_odd_text_is_safe(searcher):
    words = " ".join(f"w{i}x" for i in range(3000))  # > 1024 distinct terms
    assert len(words) > 10_000
    assert searcher.search(words, 10) == []
    assert ids(searcher.search(words + " apple", 10, BOTH)) == []  # truncated to first terms
    assert ids(searcher.search("apple " + words, 10, BOTH)) == ["n-apple", "t-apple"]
    assert len(searcher.search("apple pie " * 2000, 10)) == 2
    # a lone surrogate, an emoji, a NUL: separators, the words around them still match
    pie = searcher.search("apple pie", 10)
    for text in ["apple \ud800 pie", "apple 😀 pie", "apple\x00pie"]:
        assert ids(searcher.search(text, 10)) == ids(pie) == ["n-apple", "t-apple"], text
        assert ids(searcher.search(text, 10, BOTH)) == ids(pie), text
    assert searcher.search("ÄPPLE café", 10) == []     # no accent folding: no match


@pytest.mark.parametrize("fields", [None, BOTH, {"name": 2.5, "tags": 0.5}])
@pytest.mark.parametrize("threads", [1, 3])
def test_batch_equals_single(searcher, fields, threads):
    queries = ["apple", "dessert baking", "", "lunch vegetable soup", "toast", "name:x OR *:*",
               "breakfast", "dinner spicy curry", "nothing matches this"]
    batch = searcher.search_batch(queries, 5, fields, threads=threads)
    assert batch == [searcher.search(q, 5, fields) for q in queries]
    assert all(isinstance(d, str) and isinstance(s, float) for hits in batch for d, s in hits)


def test_ties_broken_by_docid_and_k(searcher):
    hits = searcher.search("toast", 10)
    assert ids(hits) == ["dup-a", "dup-b"] and hits[0][1] == hits[1][1]
    assert ids(searcher.search("toast", 1)) == ["dup-a"]
    scores = [s for _, s in searcher.search("dessert baking breakfast", 100, BOTH)]
    assert scores == sorted(scores, reverse=True)


def test_concurrent_searches_agree(searcher):
    from concurrent.futures import ThreadPoolExecutor

    work = [(q, k, f) for q in ["apple", "dessert", "toast", "lunch"] for k in (1, 5)
            for f in (None, BOTH)] * 10
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda a: searcher.search(*a), work))
    assert got == [searcher.search(*a) for a in work]


def test_bad_arguments(index, searcher, tmp_path):
    with pytest.raises(ValueError, match="not in the index"):
        searcher.search("apple", 5, {"nosuch": 1.0})
    with pytest.raises(ValueError, match="boost"):
        searcher.search("apple", 5, {"name": -1.0})
    with pytest.raises(ValueError, match="reserved"):
        lucene.build_index([], tmp_path / "x", ["contents"])
    with pytest.raises(FileNotFoundError):
        lucene.FieldedSearcher(tmp_path / "missing")
    closed = lucene.FieldedSearcher(index[0])
    closed.close()
    closed.close()
    with pytest.raises(RuntimeError):
        closed.search("apple", 5)


def test_empty_index(tmp_path):
    assert lucene.build_index([], tmp_path / "empty", ["name"]) == 0
    with lucene.FieldedSearcher(tmp_path / "empty") as s:
        assert s.num_docs == 0
        assert s.search("apple", 10) == []


# --------------------------------------------------------------------------- structured search

MUSIC = [
    {"id": "a", "name": "alpha", "tags": ["indie", "pop rock"], "pop": 1.0},
    {"id": "b", "name": "beta", "tags": ["indie pop", "rock"], "pop": 5.0},
    {"id": "c", "name": "gamma", "tags": ["rock and roll"], "pop": None},
    {"id": "d", "name": "delta", "tags": ["rock", "roll"], "pop": 2.0},
    {"id": "e", "name": "epsilon rock", "tags": ["rockabilly", "name:x"], "pop": float("nan")},
    {"id": "f", "name": "", "tags": [], "pop": 9.0},   # no text: not indexed, no doc value
]
TAGS = {"name": 1.0, "tags": 1.0}


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    path = tmp_path_factory.mktemp("lucene-dv") / "index"
    n = lucene.build_index(MUSIC, path, ["name", "tags"], doc_values=["pop"])
    assert n == 5
    with lucene.FieldedSearcher(path) as s:
        yield s


def docids(hits):
    return [h.docid for h in hits]


def test_doc_values_are_not_text_fields(music):
    assert music.fields == {"contents", "name", "tags"}
    assert music.doc_values == {"pop"}
    with pytest.raises(ValueError, match="not in the index"):
        music.search("1", 10, {"pop": 1.0})


def test_structured_without_phrases_or_prior_is_search(music):
    for text, fields in [("rock", TAGS), ("indie pop", {"tags": 2.0}), ("rock", None),
                         ("", TAGS), ("the", TAGS)]:
        got = music.search_structured(text, 10, fields)
        assert [(h.docid, h.score) for h in got] == music.search(text, 10, fields)


def test_prior_adds_weight_times_value(music):
    plain = {h.docid: h.score for h in music.search_structured("rock", 10, TAGS)}
    assert set(plain) == {"a", "b", "c", "d", "e"}
    for weight in (0.5, 2.0):
        hits = music.search_structured("rock", 10, TAGS, prior=lucene.Prior("pop", weight))
        pop = {"a": 1.0, "b": 5.0, "c": 0.0, "d": 2.0, "e": 0.0}   # None/NaN: no value = 0
        assert {h.docid: h.score for h in hits} == pytest.approx(
            {d: plain[d] + weight * pop[d] for d in plain}, rel=1e-6)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert docids(music.search_structured("rock", 10, TAGS, prior=lucene.Prior("pop", 2.0))
                  )[:3] == ["b", "d", "a"]
    # weight 0 is no prior at all; the prior alone matches nothing
    assert music.search_structured("rock", 10, TAGS, prior=lucene.Prior("pop", 0.0)) == \
        music.search_structured("rock", 10, TAGS)
    assert music.search_structured("", 10, TAGS, prior=lucene.Prior("pop")) == []


def test_phrases_never_span_list_values(music):
    def only(text):
        return set(docids(music.search_structured(
            "", 10, TAGS, phrases=[lucene.Phrase("tags", (text,), "filter")])))

    assert only("indie pop") == {"b"}              # not a: "indie" | "pop rock"
    assert only("pop rock") == {"a"}               # not b: "indie pop" | "rock"
    assert only("rock and roll") == {"c"}          # stopword gap inside; not d: "rock" | "roll"
    assert only("rock") == {"a", "b", "c", "d"}    # a phrase inside a value matches
    assert only("ROCK") == only("rocks") == only("rock")   # analysed: case, stemming


def test_phrase_occurs(music):
    rock = lucene.Phrase("tags", ("rock",))
    base = music.search_structured("alpha epsilon", 10, TAGS)
    assert docids(base) == ["a", "e"] or docids(base) == ["e", "a"]
    # should: adds boost × phrase score to matching docs, keeps the others
    boosted = music.search_structured("alpha epsilon", 10, TAGS,
                                      phrases=[rock._replace(occur="should", boost=5.0)])
    assert set(docids(boosted)) == {"a", "e"} and docids(boosted)[0] == "a"
    # filter: only matching docs (all of them: the filter selects, the text ranks),
    # scores unchanged; must: only matching docs, scored
    filtered = music.search_structured("alpha epsilon", 10, TAGS,
                                       phrases=[rock._replace(occur="filter")])
    assert [(h.docid, h.score) for h in filtered[:1]] == [
        (h.docid, h.score) for h in base if h.docid == "a"]
    assert set(docids(filtered)) == {"a", "b", "c", "d"}
    assert all(h.score == 0 for h in filtered[1:])        # no query term: no score
    must = music.search_structured("alpha epsilon", 10, TAGS,
                                   phrases=[rock._replace(occur="must", boost=2.0)])
    assert set(docids(must)) == {"a", "b", "c", "d"} and docids(must)[0] == "a"
    assert must[0].score > filtered[0].score
    # with no query term, the phrases alone select (and score) the documents
    alone = music.search_structured("the", 10, TAGS, phrases=[rock._replace(occur="must")])
    assert set(docids(alone)) == {"a", "b", "c", "d"}
    assert all(h.score > 0 for h in alone)
    # alternatives: any of the texts
    either = music.search_structured("", 10, TAGS, phrases=[
        lucene.Phrase("tags", ("indie pop", "rock and roll"), "filter")])
    assert set(docids(either)) == {"b", "c"}
    # two filters: both
    both = music.search_structured("", 10, TAGS, phrases=[
        lucene.Phrase("tags", ("indie",), "filter"), lucene.Phrase("tags", ("rock",), "filter")])
    assert set(docids(both)) == {"a", "b"}


@pytest.mark.parametrize("text,expected", [
    ("name:x", {"e"}),              # one token, matched literally
    ('"rock', {"a", "b", "c", "d"}),
    ("rock*", {"a", "b", "c", "d"}),  # no prefix query: rockabilly (e) is not matched
    ("tags:rock OR *:*", set()),    # "tags:rock" is one token, in no document
    ("roll~2", set()),              # the phrase "roll 2", not a fuzzy query
    ("roll~", {"c", "d"}),
    ("(rock) AND [a TO z]", set()),
])
def test_phrase_text_is_never_query_syntax(music, text, expected):
    hits = music.search_structured("", 10, TAGS, phrases=[lucene.Phrase("tags", (text,),
                                                                        "filter")])
    assert set(docids(hits)) == expected


def test_unsearchable_phrase_is_ignored(music):
    for text in ["*", "the", "", "   ", "&& ||"]:
        hits = music.search_structured("alpha", 10, TAGS,
                                       phrases=[lucene.Phrase("tags", (text,), "filter")])
        assert [(h.docid, h.score) for h in hits] == music.search("alpha", 10, TAGS)
        assert music.search_structured("", 10, TAGS,
                                       phrases=[lucene.Phrase("tags", (text,), "filter")]) == []


def test_phrase_docs(music):
    internal = {h.docid: h.doc for h in music.search_structured("rock", 10, TAGS)}
    rock = music.phrase_docs("tags", ("rock",))
    assert {d for d, doc in internal.items() if doc in rock} == {"a", "b", "c", "d"}
    assert len(rock) == 4 and set(rock) == {internal[d] for d in "abcd"}
    assert music.phrase_docs("tags", ("rock",)) is rock   # cached
    assert len(music.phrase_docs("tags", ("the",))) == 0
    assert len(music.phrase_docs("tags", ("nothing here",))) == 0
    pair = music.phrase_docs("tags", ("indie pop", "rock and roll"))
    assert {d for d, doc in internal.items() if doc in pair} == {"b", "c"}


def test_structured_bad_arguments(music):
    with pytest.raises(ValueError, match="not in the index"):
        music.search_structured("rock", 5, TAGS, phrases=[lucene.Phrase("nosuch", ("x",))])
    with pytest.raises(ValueError, match="occur"):
        music.search_structured("rock", 5, TAGS, phrases=[lucene.Phrase("tags", ("x",), "may")])
    with pytest.raises(ValueError, match="boost"):
        music.search_structured("rock", 5, TAGS,
                                phrases=[lucene.Phrase("tags", ("x",), "should", -1.0)])
    with pytest.raises(ValueError, match="doc-values"):
        music.search_structured("rock", 5, TAGS, prior=lucene.Prior("name", 1.0))
    with pytest.raises(ValueError, match="weight"):
        music.search_structured("rock", 5, TAGS, prior=lucene.Prior("pop", float("nan")))
    assert music.search_structured("rock", 0, TAGS, prior=lucene.Prior("pop")) == []


def test_doc_values_build_errors(tmp_path):
    with pytest.raises(ValueError, match="also text"):
        lucene.build_index(MUSIC, tmp_path / "x", ["name", "pop"], doc_values=["pop"])
    with pytest.raises(ValueError, match="not a number"):
        lucene.build_index([{"id": "a", "name": "x", "pop": "high"}], tmp_path / "y", ["name"],
                           doc_values=["pop"])
    with pytest.raises(ValueError, match="reserved"):
        lucene.build_index(MUSIC, tmp_path / "z", ["name"], doc_values=["contents"])


def test_list_values_score_like_joined_text(tmp_path):
    """The gap between list values changes positions only: BM25 scores are identical."""
    as_list = [{"id": d["id"], "tags": d["tags"]} for d in DOCS]
    as_text = [{"id": d["id"], "tags": ", ".join(d["tags"] or [])} for d in DOCS]
    lucene.build_index(as_list, tmp_path / "list", ["tags"])
    lucene.build_index(as_text, tmp_path / "text", ["tags"])
    with lucene.FieldedSearcher(tmp_path / "list") as a, \
            lucene.FieldedSearcher(tmp_path / "text") as b:
        for q in ["dessert", "baking breakfast", "lunch vegetable", "dinner meat spicy"]:
            for fields in (None, {"tags": 1.0}):
                assert a.search(q, 20, fields) == b.search(q, 20, fields)


def test_fast_hit_reading_checks_the_count(searcher):
    """The one-string TopDocs reading is checked against the total it states: a misread
    raises instead of silently returning too few hits (or none)."""
    java = lucene.jvm._java

    def top_docs(total, docs, relation="EQUAL_TO"):
        return java.TopDocs(java.TotalHits(total, getattr(java.TotalHitsRelation, relation)),
                            [java.ScoreDoc(d, 1.0 / (i + 1)) for i, d in enumerate(docs)])

    third = lucene.hits._hits_slow(top_docs(1, [0, 0, 0]))[2][1]    # 1/3 as a float32
    assert lucene.hits._hits_fast(top_docs(3, [7, 3, 11]), k=10) == [(7, 1.0), (3, 0.5),
                                                                (11, third)]
    assert lucene.hits._hits_fast(top_docs(5, [7, 3]), k=2) == [(7, 1.0), (3, 0.5)]
    assert lucene.hits._hits_fast(top_docs(0, []), k=10) == []
    # a lower bound ("1000+ hits") allows more hits than it states, up to k
    assert len(lucene.hits._hits_fast(top_docs(1, [7, 3], "GREATER_THAN_OR_EQUAL_TO"), k=5)) == 2
    with pytest.raises(RuntimeError, match="read 2 hits .* expected 5"):
        lucene.hits._hits_fast(top_docs(5, [7, 3]), k=10)
    with pytest.raises(RuntimeError, match="read 0 hits .* expected 2"):
        lucene.hits._hits_fast(top_docs(2, []), k=10)
    with pytest.raises(RuntimeError, match="read 3 hits"):
        lucene.hits._hits_fast(top_docs(3, [7, 3, 11], "GREATER_THAN_OR_EQUAL_TO"), k=2)


FILMS = [
    {"id": "farm", "title": "Animal Farm", "genres": ["Animation", "Drama"]},
    {"id": "house", "title": "Animal House", "genres": ["Comedy"]},
    {"id": "toons", "title": "Cool World", "genres": ["Animation", "Comedy"]},
    {"id": "runner", "title": "Running Man", "genres": ["Action"]},
]


@pytest.mark.parametrize("stemmer,expected", [
    ("porter", {"farm", "house", "toons"}),   # "animated" = "animal" = "anim"
    ("krovetz", {"farm", "toons"}),            # "animate" vs "animal": genres only
    ("none", {"farm", "toons"}),
])
def test_stemmer_per_field(tmp_path, stemmer, expected):
    """Titles analysed without Porter: "animated comedy" stops matching "Animal ..." in
    the title, while the genre field (Porter) still matches "Animation"."""
    lucene.build_index(FILMS, tmp_path / "i", ["title", "genres"],
                       stemmers={"title": stemmer})
    with lucene.FieldedSearcher(tmp_path / "i") as s:
        assert s.stemmers == ({} if stemmer == "porter" else {"title": stemmer})
        assert set(ids(s.search("animated", 10, {"title": 3.0, "genres": 1.0}))) == expected
        # the title field alone: exact words match, stems only where stemmed
        assert ids(s.search("running", 10, {"title": 1.0})) == ["runner"]
        assert bool(s.search("run", 10, {"title": 1.0})) is (stemmer == "porter")
        # phrases are analysed per field too
        hits = s.search_structured("", 10, None, phrases=[lucene.Phrase("title", ("animals",))])
        assert bool(hits) is (stemmer != "none")          # Krovetz: animals = animal
        # the clause-limit fallback analyses per field as well
        long = "running " + " ".join(f"w{i}" for i in range(2000))
        assert ids(s.search(long, 10, {"title": 1.0})) == ["runner"]


def test_per_field_query_equals_anserini_when_all_porter(tmp_path):
    """An index with a non-default stemmer on one field scores the other fields exactly as
    an all-Porter index does (the per-field query has Anserini's shape)."""
    lucene.build_index(FILMS, tmp_path / "a", ["title", "genres"])
    lucene.build_index(FILMS, tmp_path / "b", ["title", "genres"], stemmers={"title": "none"})
    with lucene.FieldedSearcher(tmp_path / "a") as a, lucene.FieldedSearcher(tmp_path / "b") as b:
        for q in ["comedy", "animation drama", "action comedy"]:
            assert a.search(q, 10, {"genres": 2.0}) == b.search(q, 10, {"genres": 2.0})
        for q in ["cool world", "comedy world", "action man"]:   # same terms either way
            assert a.search(q, 10, {"title": 1.0, "genres": 2.0}) == \
                b.search(q, 10, {"title": 1.0, "genres": 2.0})


def test_bad_stemmers(tmp_path):
    with pytest.raises(ValueError, match="unknown stemmer 'snowball'"):
        lucene.build_index(FILMS, tmp_path / "x", ["title"], stemmers={"title": "snowball"})
    with pytest.raises(ValueError, match="not an indexed field"):
        lucene.build_index(FILMS, tmp_path / "y", ["title"], stemmers={"plot": "none"})
