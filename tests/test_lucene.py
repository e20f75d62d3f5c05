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
    with lucene.LuceneSearcher(index[0]) as s:
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
    for text in ["*:*", "*", "AND", "OR", "NOT", "-", "+", "\\", '"unbalanced', "(((", ")",
                 "[a TO z]", "{a TO z}", "/.*/", "apple~2", "apple^100", "&& || !", "?", ":"]:
        hits = searcher.search(text, 100, fields)
        assert len(hits) < searcher.num_docs, text
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
    for text in ["apple \ud800 pie", "apple 😀 pie", "apple\x00pie", "ÄPPLE café"]:
        searcher.search(text, 10)
        searcher.search(text, 10, BOTH)


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
        lucene.LuceneSearcher(tmp_path / "missing")
    closed = lucene.LuceneSearcher(index[0])
    closed.close()
    closed.close()
    with pytest.raises(RuntimeError):
        closed.search("apple", 5)


def test_empty_index(tmp_path):
    assert lucene.build_index([], tmp_path / "empty", ["name"]) == 0
    with lucene.LuceneSearcher(tmp_path / "empty") as s:
        assert s.num_docs == 0
        assert s.search("apple", 10) == []
