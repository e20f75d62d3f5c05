"""``FieldedSearcher``: BM25 search of an index built by ``indexer.build_index``, with
phrase clauses, a doc-values prior and slot filters, safe from several threads.

Kept whole: one class, :class:`FieldedSearcher`, whose every call into Java follows the
same discipline (the pyjnius lock of ``jvm``, or the searcher's own proxy class for the
search itself); it is audited in one place.
"""


from __future__ import annotations

import logging
import math
import os
import struct
import threading
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence


from ltrr_plugins.arms.lucene.analysis import analyzer, field_analyzers, read_analysis
from ltrr_plugins.arms.lucene.hits import DocBits, Hit, _hits
from ltrr_plugins.arms.lucene.jvm import _jstr_safe, _lock, map_threads, start_jvm

log = logging.getLogger(__name__)

class Phrase(NamedTuple):
    """A phrase clause: documents whose ``field`` contains one of ``texts`` as a phrase.

    Each text is analysed with the index's analyzer (Lucene's ``QueryBuilder``: terms at
    their positions, stopwords leaving gaps; never parsed as query syntax); a text with
    no searchable term is dropped, and a clause left with none is ignored. ``occur``:
    ``"should"`` adds ``boost`` × the phrase's BM25 score to documents that match;
    ``"filter"`` keeps only documents that match, without changing scores; ``"must"``
    does both.
    """

    field: str
    texts: tuple[str, ...]
    occur: str = "should"
    boost: float = 1.0


class Prior(NamedTuple):
    """Adds ``weight × value`` of the numeric doc-values ``field`` to every hit's score
    (no value = 0; negative values count as 0, since Lucene scores are non-negative)."""

    field: str
    weight: float = 1.0


_OCCURS = ("should", "filter", "must")


_SEARCH_SIG = ("(Lorg/apache/lucene/search/Query;ILorg/apache/lucene/search/Sort;Z)"
               "Lorg/apache/lucene/search/TopFieldDocs;")
_free_search_classes: list = []   # private IndexSearcher proxy classes of closed searchers
_search_classes_made = 0


def _own_search_method(searcher):
    """``searcher.search(Query, int, Sort, boolean)`` through a proxy class of its own.

    The method descriptor of a private class is bound once, to this searcher only, so the
    call needs no lock (see :data:`_lock`) and Lucene searches of several arms overlap.
    The classes are reused after :meth:`FieldedSearcher.close` (pyjnius keeps every class
    it registers)."""
    global _search_classes_made
    from jnius import JavaClass, JavaMethod, MetaJavaClass, cast

    with _lock:
        if _free_search_classes:
            cls = _free_search_classes.pop()
        else:
            _search_classes_made += 1
            cls = MetaJavaClass.__new__(
                MetaJavaClass, "LtrrIndexSearcher", (JavaClass,),
                {"__javaclass__": "org/apache/lucene/search/IndexSearcher",
                 "search": JavaMethod(_SEARCH_SIG)},
                classparams=("ltrr-private", _search_classes_made))  # never autoclass's key
        return cls, cast(cls, searcher).search


def _serialized(method):
    """Run a searcher method under the module's pyjnius lock (:data:`_lock`: pyjnius
    method descriptors are shared by all objects of a Java class, so calls into Java
    from several threads, on any searchers, must not overlap)."""
    import functools

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with _lock:
            return method(self, *args, **kwargs)

    return locked


class FieldedSearcher:
    """BM25 search over an index built by :func:`build_index` (or any Anserini index).

    Thread-safe: ``search`` may be called from several Python threads at once, on one or
    several searchers; building queries and reading hits is serialised process-wide (see
    :data:`_lock`), Lucene's search is not. Searches must not overlap ``close()``. Results are ``(docid, score)``
    lists in rank order: raw BM25 score (float32) descending, ties broken by docid
    ascending, as Anserini does. Opening runs a warm-up query; docids of hits are
    cached (one Python slot per indexed document).
    """

    #: Most bytes of bitmaps :meth:`phrase_docs` keeps cached, over all phrases.
    PHRASE_CACHE_BYTES = 64 * 2 ** 20

    @_serialized
    def __init__(self, index_dir: str | os.PathLike, k1: float = 0.9, b: float = 0.4):
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise FileNotFoundError(f"no Lucene index at {index_dir}")
        java = self._java = start_jvm()
        self._reader = java.DirectoryReader.open(
            java.FSDirectory.open(java.Paths.get(str(index_dir.resolve()))))
        self._searcher = java.IndexSearcher(
            self._reader, signature="(Lorg/apache/lucene/index/IndexReader;)V")
        self._searcher.setSimilarity(java.BM25Similarity(float(k1), float(b)))
        self._search_class, self._search = _own_search_method(self._searcher)
        #: Fields indexed with a stemmer other than Porter (see :mod:`.analysis`).
        self.stemmers: dict[str, str] = read_analysis(index_dir)
        self._default = analyzer(java)
        # per field: phrases go through the wrapper, bags of words through _own
        self._analyzer, self._own = field_analyzers(java, self.stemmers)
        self._generator = java.BagOfWordsQueryGenerator()
        self._sort = java.Sort(java.SortField.FIELD_SCORE,
                               java.SortField("id", java.SortFieldType.STRING_VAL))
        self._max_clauses = java.IndexSearcher.getMaxClauseCount()
        # pyjnius looks static fields up on every access (~10 us): keep the constants
        self._occur = {"must": java.Occur.MUST, "should": java.Occur.SHOULD,
                       "filter": java.Occur.FILTER}
        self._max_doc = self._reader.maxDoc()
        self.num_docs: int = self._reader.numDocs()
        #: Indexed text fields (``contents`` and the per-field ones).
        self.fields: frozenset[str] = frozenset(
            f for f in java.FieldInfos.getIndexedFields(self._reader).toArray() if f != "id")
        #: Numeric doc-values fields (usable as a :class:`Prior`).
        self.doc_values: frozenset[str] = self._numeric_fields()
        self._ids: list[str | None] = [None] * self._max_doc  # Lucene docid -> external id
        self._boosts: dict[tuple, object] = {}                # fields -> cached Java HashMap
        self._phrases: dict[tuple[str, str], object] = {}     # (field, text) -> Query | None
        self._clauses: dict[tuple, object] = {}               # (field, texts, boost) -> Query
        self._priors: dict[tuple[str, float], object] = {}    # (field, weight) -> Query
        self._phrase_docs: dict[tuple, DocBits] = {}          # (field, texts) -> doc numbers
        self._phrase_docs_size = 0
        leaves = self._reader.leaves()
        self._leaves = [leaves.get(i) for i in range(leaves.size())]
        self._cache_lock = threading.Lock()
        self._closed = False
        self._warm_up()

    # -- public API

    def search(self, query: str, k: int, fields: Mapping[str, float] | None = None
               ) -> list[tuple[str, float]]:
        """Top ``k`` ``(docid, score)`` for ``query``; ``fields`` = {field: boost} or None
        for the ``contents`` field. The text is analysed into a bag of terms (Lucene
        syntax is not interpreted); text with no searchable term returns []. Text with
        more distinct terms than Lucene's clause limit (1024, split across the fields)
        is searched on its first distinct terms."""
        if self._closed:
            raise RuntimeError("searcher is closed")
        with _lock:
            boosts = self._boost_map(fields)
        k = min(int(k), self._max_doc)
        if k <= 0 or boosts is False or not query or query.isspace():
            return []
        try:
            top = self._top(query, boosts, k)
        except UnicodeEncodeError:  # lone surrogates
            top = self._top(_jstr_safe(query), boosts, k)
        with _lock:
            return [(docid, score) for docid, score, _ in self._resolve(top, k)]

    def search_structured(self, query: str, k: int, fields: Mapping[str, float] | None = None,
                          *, phrases: Sequence[Phrase] = (), prior: Prior | None = None
                          ) -> list[Hit]:
        """Top ``k`` hits of the bag-of-words query (as :meth:`search`) combined with
        ``phrases`` and a ``prior``:

        ``score = bm25(query) + Σ boost·bm25(phrase) [should/must] + weight·value [prior]``,
        restricted to documents matching every filter/must phrase; without such a phrase,
        to documents matching the query's terms (with none, the phrases alone select the
        documents). Without
        phrases or prior this is exactly :meth:`search`. Returns [] when there is nothing
        to match (no query term and no phrase clause), whatever the prior.
        """
        if self._closed:
            raise RuntimeError("searcher is closed")
        with _lock:
            plan = self._structured(query, k, fields, phrases, prior)
        if plan is None:
            return []
        top = self._top(*plan)
        with _lock:
            return self._resolve(top, plan[2])

    def _structured(self, query: str, k: int, fields: Mapping[str, float] | None,
                    phrases: Sequence[Phrase], prior: Prior | None):
        """``_top``'s arguments for :meth:`search_structured`; None if nothing can match."""
        boosts = self._boost_map(fields)
        clauses = self._phrase_clauses(phrases)
        prior_query = self._prior_query(prior)
        k = min(int(k), self._max_doc)
        if k <= 0:
            return None
        text = query if query and not query.isspace() and boosts is not False else ""
        if not clauses and prior_query is None:
            return (_jstr_safe(text), boosts, k) if text else None
        if text:
            text = _jstr_safe(text)
            if self._java.AnalyzerUtils.analyze(self._default, text).isEmpty():
                text = ""
        if not text and not clauses:
            return None
        java = self._java
        must, should = self._occur["must"], self._occur["should"]
        # With a required clause the prior can be one more optional clause; with only
        # optional ones it must wrap them (else it alone would match every document).
        # A filter (or must) phrase selects the documents and the free text only ranks
        # them: "rock zzqx" keeps the rock artists. Without one, the text selects.
        selecting = any(occur is not should for occur, _ in clauses)
        required = bool(text) or selecting

        def combine(text_query):
            builder = java.BooleanQueryBuilder()
            if text_query is not None:
                builder.add(text_query, should if selecting else must)
            for occur, q in clauses:
                builder.add(q, occur)
            if prior_query is None:
                return builder.build()
            if required:
                builder.add(prior_query, should)
                return builder.build()
            outer = java.BooleanQueryBuilder()
            outer.add(builder.build(), must)
            outer.add(prior_query, should)
            return outer.build()

        return text, boosts, k, combine

    @_serialized
    def phrase_docs(self, field: str, texts: Sequence[str]) -> DocBits:
        """Internal document numbers matching ``Phrase(field, texts)`` (any of the texts),
        as a bitmap (cached, up to :attr:`PHRASE_CACHE_BYTES` over all phrases)."""
        key = (field, tuple(texts))
        found = self._phrase_docs.get(key)
        if found is not None:
            return found
        query = self._phrase_group(field, key[1])
        found = (DocBits(bytes((self._max_doc + 7) // 8)) if query is None
                 else self._bitmap(query))
        with self._cache_lock:
            if key not in self._phrase_docs:
                while self._phrase_docs and (self._phrase_docs_size + found.nbytes
                                             > self.PHRASE_CACHE_BYTES):
                    self._phrase_docs_size -= self._phrase_docs.pop(
                        next(iter(self._phrase_docs))).nbytes
                self._phrase_docs[key] = found
                self._phrase_docs_size += found.nbytes
        return found

    def search_batch(self, queries: list[str], k: int, fields: Mapping[str, float] | None = None,
                     threads: int = 1) -> list[list[tuple[str, float]]]:
        """:meth:`search` for each query, in order, on up to ``threads`` Python threads."""
        queries = list(queries)
        if max(1, min(int(threads), len(queries))) > 1:
            with _lock:
                self._boost_map(fields)  # validate once, up front
        return map_threads(lambda q: self.search(q, k, fields), queries, threads)

    @_serialized
    def close(self) -> None:
        """Release the index reader (idempotent)."""
        if not self._closed:
            self._closed = True
            self._reader.close()
            _free_search_classes.append(self._search_class)

    def __enter__(self) -> FieldedSearcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals

    def _bitmap(self, query) -> DocBits:
        """Every document matching ``query``, read segment by segment into a FixedBitSet
        (a few Java calls whatever the number of matches)."""
        java = self._java
        searcher = self._searcher
        weight = searcher.createWeight(searcher.rewrite(query),
                                       java.ScoreMode.COMPLETE_NO_SCORES, 1.0)
        total = 0
        for leaf in self._leaves:
            scorer = weight.scorer(leaf)
            if scorer is None:
                continue
            bits = java.FixedBitSet(leaf.reader().maxDoc())
            getattr(bits, "or")(scorer.iterator())
            words = bits.getBits()   # long[]: one JNI call, whatever the matches
            leaf_bits = int.from_bytes(struct.pack(f"<{len(words)}q", *words), "little")
            total |= leaf_bits << leaf.docBase
        return DocBits(total.to_bytes((self._max_doc + 7) // 8, "little"))

    def _numeric_fields(self) -> frozenset[str]:
        infos = self._java.FieldInfos.getMergedFieldInfos(self._reader).iterator()
        out = set()
        while infos.hasNext():
            info = infos.next()
            if info.getDocValuesType().name() == "NUMERIC":
                out.add(info.getName())
        return frozenset(out)

    def _warm_up(self) -> None:
        """Run the search path once so its Java classes load now, not in the first query
        (a cold first query costs ~150 ms, enough to miss an arm's deadline)."""
        if self._max_doc == 0:
            return
        java = self._java
        try:
            java.ScoredDocs  # noqa: B018 - autoclass it now
            # any indexed term of "contents", so that the queries really score documents
            term = java.IndexReaderUtils.getTerms(self._reader).next().getTerm()
            self.search(term, 10)
            if self.fields:
                self.search(term, 10, {f: 1.0 for f in self.fields})
        except Exception as e:  # noqa: BLE001 - only a warm-up, but never a silent one
            log.warning("Lucene search warm-up failed (the first query may be slow or fail): "
                        "%s: %s", type(e).__name__, e)

    def _resolve(self, top, k: int) -> list[Hit]:
        """The hits of a TopDocs (of a search for ``k`` hits) with their external ids."""
        hits = _hits(top, k)
        ids = self._ids
        if any(ids[doc] is None for doc, _ in hits):
            # Fill the docid cache for all these hits with one call (loads their stored
            # fields; one by one, lookups cost ~100 us each).
            found = self._java.ScoredDocs.fromTopDocs(top, self._searcher).docids
            for (doc, _), docid in zip(hits, found):
                ids[doc] = docid
        return [Hit(ids[doc], score, doc) for doc, score in hits]

    def _boost_map(self, fields: Mapping[str, float] | None):
        """None for ``contents``, False if every boost is 0, else a cached Java HashMap."""
        if fields is None:
            return None
        key = tuple(sorted(fields.items()))
        cached = self._boosts.get(key)
        if cached is not None:
            return cached
        unknown = sorted(set(fields) - self.fields)
        if unknown:
            raise ValueError(f"field(s) {', '.join(unknown)} not in the index "
                             f"(indexed: {', '.join(sorted(self.fields))})")
        jmap = self._java.HashMap()
        for name, boost in key:
            boost = float(boost)
            if not math.isfinite(boost) or boost < 0:
                raise ValueError(f"boost for {name!r} must be finite and >= 0, got {boost}")
            if boost > 0:
                jmap.put(name, self._java.Float(boost))
        value = jmap if jmap.size() else False
        self._boosts[key] = value
        return value

    def _phrase(self, field: str, text: str):
        """The analysed phrase (or term) query of ``text`` on ``field``; None if no term."""
        key = (field, text)
        try:
            return self._phrases[key]
        except KeyError:
            pass
        query = self._java.QueryBuilder(self._analyzer).createPhraseQuery(field, _jstr_safe(text))
        if len(self._phrases) >= 100_000:
            self._phrases.clear()
        self._phrases[key] = query
        return query

    def _phrase_group(self, field: str, texts: tuple[str, ...]):
        """Query matching any of ``texts`` as a phrase on ``field``; None if none can."""
        if field not in self.fields:
            raise ValueError(f"phrase field {field!r} not in the index "
                             f"(indexed: {', '.join(sorted(self.fields))})")
        queries = []
        for text in dict.fromkeys(texts):
            if isinstance(text, str) and text and not text.isspace():
                q = self._phrase(field, text)
                if q is not None:
                    queries.append(q)
        if len(queries) <= 1:
            return queries[0] if queries else None
        builder = self._java.BooleanQueryBuilder()
        for q in queries[: self._max_clauses]:
            builder.add(q, self._occur["should"])
        return builder.build()

    def _phrase_clauses(self, phrases: Sequence[Phrase]) -> list[tuple[object, object]]:
        """``(Occur, Query)`` of each phrase that can match something."""
        java = self._java
        out = []
        for p in phrases:
            if p.occur not in _OCCURS:
                raise ValueError(f"phrase occur must be one of {', '.join(_OCCURS)}, "
                                 f"got {p.occur!r}")
            boost = float(p.boost)
            if not math.isfinite(boost) or boost < 0:
                raise ValueError(f"phrase boost must be finite and >= 0, got {p.boost}")
            key = (p.field, tuple(p.texts), 1.0 if p.occur == "filter" else boost)
            try:
                query = self._clauses[key]
            except KeyError:
                query = self._phrase_group(key[0], key[1])
                if query is not None and key[2] != 1.0:
                    query = java.BoostQuery(query, boost)
                if len(self._clauses) >= 100_000:
                    self._clauses.clear()
                self._clauses[key] = query
            if query is not None:
                out.append((self._occur[p.occur], query))
        return out

    def _prior_query(self, prior: Prior | None):
        """The SHOULD clause adding ``weight × value``; None without a prior or weight 0."""
        if prior is None:
            return None
        weight = float(prior.weight)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"prior weight must be finite and >= 0, got {prior.weight}")
        if prior.field not in self.doc_values:
            raise ValueError(f"prior field {prior.field!r} is not a numeric doc-values field "
                             f"of the index (has: {', '.join(sorted(self.doc_values)) or 'none'})")
        if weight == 0:
            return None
        key = (prior.field, weight)
        query = self._priors.get(key)
        if query is None:
            java = self._java
            query = java.FunctionScoreQuery(java.MatchAllDocsQuery(),
                                            java.DoubleValuesSource.fromDoubleField(prior.field))
            if weight != 1.0:
                query = java.BoostQuery(query, weight)
            self._priors[key] = query
        return query

    def _top(self, text: str, boosts, k: int, combine: Callable | None = None):
        """TopDocs of ``combine(bag-of-words query of text)`` (None for empty text).

        The query is built under :data:`_lock`; the search itself runs through this
        searcher's own method (:func:`_own_search_method`), outside it."""
        combine = combine or (lambda q: q)
        try:
            with _lock:
                query = combine(self._query(text, boosts) if text else None)
            return self._search(query, k, self._sort, True)
        except self._java.JavaException as e:
            if not text or "TooMany" not in str(getattr(e, "classname", "") or e):
                raise
        # More distinct terms than Lucene's clause limit (1024): keep the first ones.
        with _lock:
            query = combine(self._truncated_query(text, boosts))
        return self._search(query, k, self._sort, True)

    def _query(self, text: str, boosts):
        """Anserini's bag-of-words query: per field, the text's terms as analysed for that
        field, the field's clause boosted, the fields' clauses SHOULD."""
        if boosts is None:
            return self._generator.buildQuery("contents", self._default, text)
        if not self._own:
            return self._generator.buildQuery(boosts, self._default, text)
        java = self._java
        builder = java.BooleanQueryBuilder()
        for f in boosts.keySet().toArray():
            clause = self._generator.buildQuery(f, self._own.get(f, self._default), text)
            builder.add(java.BoostQuery(clause, float(boosts.get(f))), self._occur["should"])
        return builder.build()

    def _truncated_query(self, text: str, boosts):
        """Bag-of-words query on the first distinct terms that fit Lucene's clause limit."""
        java = self._java
        text = _jstr_safe(text)
        fields = {"contents": 1.0} if boosts is None else {
            f: float(boosts.get(f)) for f in boosts.keySet().toArray()}
        limit = max(1, self._max_clauses // len(fields))
        weights_of: dict[int, object] = {}

        def weights(field: str):
            analyzer = self._own.get(field, self._default)
            if id(analyzer) not in weights_of:
                counts: dict[str, int] = {}
                for t in java.AnalyzerUtils.analyze(analyzer, text).toArray():
                    if t in counts:
                        counts[t] += 1
                    elif len(counts) < limit:
                        counts[t] = 1
                jmap = java.HashMap()
                for t, n in counts.items():
                    jmap.put(t, java.Float(float(n)))
                weights_of[id(analyzer)] = jmap
            return weights_of[id(analyzer)]

        if boosts is None:
            return self._generator.buildQuery("contents", weights("contents"))
        builder = java.BooleanQueryBuilder()
        for f, boost in fields.items():
            builder.add(java.BoostQuery(self._generator.buildQuery(f, weights(f)), boost),
                        java.Occur.SHOULD)
        return builder.build()
