"""Several Lucene arms searched at once give exactly their sequential results (issue 10.1).

The pipeline fans a query out to its arms on a thread pool (src/ltrr/runtime/pipeline.py), so
two ``bm25`` arms search their own ``FieldedSearcher`` at the same time. pyjnius binds an
instance method by storing the object on the method descriptor that every proxy of that
Java class shares (``JavaMethod.__get__`` sets ``self.j_self``), so one thread's call
could run on another thread's IndexSearcher / query builder: ~3-20% of results came back
empty or from the other arm's index. Real Lucene, no mocks.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from ltrr_plugins.arms import lucene

VOCAB = [f"w{i}x" for i in range(300)]


def _docs(prefix: str, fields: list[str], n: int, rng: random.Random):
    return [{"id": f"{prefix}{i:04d}",
             **{f: " ".join(rng.choices(VOCAB, k=rng.randint(2, 10))) for f in fields}}
            for i in range(n)]


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    """Four arms: two searchers over one index (other boosts / BM25 parameters / flat),
    a third on a second index with other field names, and a structured one."""
    rng = random.Random(10)
    root = tmp_path_factory.mktemp("lucene-concurrency")
    lucene.build_index(_docs("a", ["name", "tags"], 1500, rng), root / "a", ["name", "tags"])
    lucene.build_index(_docs("b", ["title", "body"], 1500, rng), root / "b", ["title", "body"])
    searchers = [lucene.FieldedSearcher(root / "a"),
                 lucene.FieldedSearcher(root / "a", k1=1.2, b=0.75),
                 lucene.FieldedSearcher(root / "b")]
    calls = [
        lambda q: searchers[0].search(q, 20, {"name": 2.0, "tags": 1.0}),
        lambda q: searchers[1].search(q, 20),
        lambda q: searchers[2].search(q, 20, {"title": 1.0, "body": 0.5}),
        lambda q: [tuple(h) for h in searchers[0].search_structured(
            q, 20, {"name": 1.0, "tags": 1.0},
            phrases=[lucene.Phrase("tags", (q.split()[0],), "should", 2.0)])],
    ]
    yield calls
    for s in searchers:
        s.close()


def _queries(n: int) -> list[str]:
    rng = random.Random(11)
    return [" ".join(rng.choices(VOCAB, k=rng.randint(1, 4))) for _ in range(n)]


@pytest.mark.parametrize("which", [(0, 1), (0, 2), (0, 1, 2), (0, 1, 2, 3)],
                         ids=["2-same-index", "2-other-index", "3-arms", "4-with-structured"])
def test_concurrent_arms_equal_sequential(arms, which):
    calls = [arms[i] for i in which]
    queries = _queries(250)
    expected = [[call(q) for call in calls] for q in queries]
    assert all(all(r) for r in expected), "every query should match in every arm"
    wrong = []
    with ThreadPoolExecutor(2 * len(calls) + 2, thread_name_prefix="ltrr-arm") as pool:
        for rep in range(3):
            futures = [[pool.submit(call, q) for call in calls] for q in queries]
            for q, want, fs in zip(queries, expected, futures):
                got = [f.result() for f in fs]
                wrong += [(rep, q, i, len(g)) for i, (g, w) in enumerate(zip(got, want))
                          if g != w]
    total = 3 * len(queries) * len(calls)
    assert not wrong, (f"{len(wrong)} of {total} concurrent results differ from the "
                       f"sequential ones ({sum(n == 0 for *_, n in wrong)} empty); "
                       f"first: {wrong[:5]}")


def test_map_threads_batch_equals_sequential(arms):
    """One searcher, several threads (the arm's ``threads:`` parameter)."""
    queries = _queries(300)
    expected = [arms[0](q) for q in queries]
    for _ in range(2):
        assert lucene.map_threads(arms[0], queries, threads=4) == expected


def test_searchers_reuse_their_private_search_classes(tmp_path):
    """Each open searcher has its own IndexSearcher proxy class (so its search needs no
    lock); a closed searcher's class is reused, so reopening does not grow pyjnius's
    class registry."""
    lucene.build_index([{"id": "a", "name": "apple pie"}], tmp_path, ["name"])
    with lucene.FieldedSearcher(tmp_path) as one, lucene.FieldedSearcher(tmp_path) as two:
        assert one._search_class is not two._search_class
    made = lucene.searcher._search_classes_made
    for _ in range(5):
        with lucene.FieldedSearcher(tmp_path) as s:
            assert [docid for docid, _ in s.search("apple", 5)] == ["a"]
    assert lucene.searcher._search_classes_made == made
