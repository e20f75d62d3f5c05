"""Building an index with Anserini's ``SimpleIndexer`` (JsonCollection documents, the
English analyzer, a stemmer per field), list values gapped, numeric fields written as doc
values after it."""


from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import uuid
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence


from ltrr_plugins.arms.lucene.analysis import check_stemmers, field_analyzers, write_analysis
from ltrr_plugins.arms.lucene.jvm import _ensure_log4j, _lock, start_jvm

log = logging.getLogger(__name__)

#: Field names Anserini's document generator uses itself; user fields may not take them.
RESERVED_FIELDS = frozenset({"id", "contents", "raw", "entity"})
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")

#: What joins the values of a list field: words the analyzer drops as stopwords, so they
#: cost nothing in BM25 (no term, no length) but leave a gap of 4 positions between values,
#: so that a phrase (even one with stopwords inside, like "rock and roll") never matches
#: across two values.
VALUE_GAP = " , the the the the , "


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
                doc_values: Sequence[str] = (), stemmers: Mapping[str, str] | None = None
                ) -> int:
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

    ``stemmers``: ``{field: porter | krovetz | none}`` (default porter, Anserini's); the
    choice is recorded in the index (see :mod:`.analysis`) for the searcher. ``contents``
    is always Porter.

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
    stemmers = check_stemmers(stemmers)
    unknown = sorted(set(stemmers) - set(fields))
    if unknown:
        raise ValueError(f"stemmer for {', '.join(map(repr, unknown))}, not an indexed field "
                         f"({', '.join(fields)})")
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
        if stemmers:
            _analyse_per_field(java, indexer, index_dir, stemmers)
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
    write_analysis(index_dir, stemmers)
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


def _analyse_per_field(java, indexer, index_dir: Path, stemmers: Mapping[str, str]) -> None:
    """Give SimpleIndexer a writer analysing each field with its own stemmer.

    SimpleIndexer takes one analyzer for every field, fixed in its writer's config; its
    writer (no document written yet) is closed and replaced by one configured the same
    way with a PerFieldAnalyzerWrapper. Documents are still generated by Anserini."""
    from jnius import cast

    old = cast("org.apache.lucene.index.IndexWriter",
               java.FieldUtils.readField(indexer, "writer", True))
    was = old.getConfig()
    config = java.IndexWriterConfig(field_analyzers(java, stemmers)[0])
    config.setOpenMode(java.OpenMode.CREATE)
    config.setRAMBufferSizeMB(was.getRAMBufferSizeMB())
    config.setUseCompoundFile(was.getUseCompoundFile())
    config.setMergeScheduler(java.ConcurrentMergeScheduler())
    old.close()
    writer = java.IndexWriter(java.FSDirectory.open(java.Paths.get(str(index_dir.resolve()))),
                              config)
    java.FieldUtils.writeField(indexer, "writer", writer, True)


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


