"""Feedback events: reading JSONL/Parquet files with located errors, and the event log.

The event's fields and rules are :class:`ltrr.feedback.schema.Event`; both reading paths
here take them from it.

An event says that a user did something (``type``: click, play, favorite, skip,
impression, ...) with an entity, usually in answer to a logged request. Ingestion
is idempotent by ``event_id``: replaying a file adds nothing twice.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Callable

import polars as pl

from ltrr.errors import Location, RunError
from ltrr.files import check_file
from ltrr.feedback.schema import (EVENT_SCHEMA, MAX_CHARS, MAX_POSITION, REQUIRED, TEXT_FIELDS,
                                  Event, context, derived_event_id, event_row, frame_of,
                                  validate)
from ltrr.parquet_log import ParquetLog
from ltrr.timestamps import DEFAULT_MAX_FUTURE_S, parse_timestamp, valid_expr

log = logging.getLogger("ltrr")


def events_from_rows(rows: list, where: "Callable[[int], Location]",
                     weights: dict[str, float] | None = None, *,
                     max_future_s: float = DEFAULT_MAX_FUTURE_S) -> pl.DataFrame:
    """Validated events from already-parsed rows (dicts, or :class:`Event` s already
    validated with the same rules, as ``/feedback`` bodies are).

    ``where(i)`` locates row ``i`` in error messages (e.g. ``request field events[3]``);
    ``max_future_s``: how far ahead of the clock a timestamp may be (the spec's
    ``feedback.max_future_s``).
    """
    ctx = context(weights, max_future_s)
    return frame_of([event_row(r) if isinstance(r, Event) else validate(r, where(i), ctx)
                     for i, r in enumerate(rows)])


def read_events(path: Path, weights: dict[str, float] | None = None, *,
                max_future_s: float = DEFAULT_MAX_FUTURE_S) -> pl.DataFrame:
    """Events from a JSONL (one object per line) or Parquet file, validated.

    Errors name the file and line (JSONL) or row (Parquet) and the field. A well-formed
    file is validated column by column with polars; any problem sends it through the
    row-by-row path, which finds and locates the first bad line or row. Timestamps
    follow :mod:`ltrr.timestamps` (at most ``max_future_s`` ahead of the clock).
    """
    path = Path(path)
    if check_file(path, "events file", error=RunError, empty_ok=True,
                  hint="events files are JSONL (one object per line) or Parquet").st_size == 0:
        return EVENT_SCHEMA.to_frame()          # no events, and nothing read (/proc files)
    if path.suffix == ".parquet":
        try:
            frame = pl.read_parquet(path)
        except Exception as exc:   # not Parquet, truncated, unreadable: say so, located
            raise RunError(f"cannot read the Parquet file: {exc}".splitlines()[0],
                           where=Location(str(path)),
                           hint="events files are JSONL (one object per line) or Parquet"
                           ) from None
        fast = _fast(_vectorised, frame, weights, max_future_s)
        if fast is not None:
            return fast
        ctx = context(weights, max_future_s)
        return frame_of([validate(_present(r), Location(f"{path} row {i + 1}"), ctx)
                         for i, r in enumerate(frame.iter_rows(named=True))])
    data = path.read_bytes()
    fast = _fast(_read_jsonl_fast, data, weights, max_future_s)
    if fast is not None:
        return fast
    return frame_of(list(_jsonl_rows(path, data, weights, max_future_s)))


def _present(row: dict) -> dict:
    """A Parquet row without its null columns (a column absent from one row is null)."""
    return {k: v for k, v in row.items() if v is not None}


def _jsonl_rows(path: Path, data: bytes, weights: dict[str, float] | None,
                max_future_s: float = DEFAULT_MAX_FUTURE_S):
    """The row-by-row path: every line parsed and checked, errors located."""
    ctx = context(weights, max_future_s)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = len(_NEWLINE.findall(data, 0, exc.start)) + 1
        raise RunError(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                       where=Location(str(path), line), hint="save the file as UTF-8") from None
    for n, line in enumerate(io.StringIO(text, newline=None), 1):
        if not line.strip():
            continue
        where = Location(str(path), n)
        try:
            obj = json.loads(line)
        except ValueError as exc:     # also a number of more than 4,300 digits
            raise RunError(f"invalid JSON: {exc}", where=where) from None
        except RecursionError:
            raise RunError("invalid event: nested too deeply", where=where,
                           hint="an event is one flat JSON object of text and numbers"
                           ) from None
        if not isinstance(obj, dict):
            raise RunError("each line must be a JSON object", where=where)
        yield validate(obj, where, ctx)


# --- the vectorised path -----------------------------------------------------------------
#
# It must accept exactly the files the row path accepts and return the same frame (the
# default timestamp aside: one ingestion time instead of one per row); whenever it cannot
# be sure, it returns None and the row path decides.

_NEWLINE = re.compile(rb"\r\n|\r|\n")      # what Python's universal newlines split on
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")   # a UTF-16 surrogate escaped in JSON text
_INTEGER = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
_FLOAT = (pl.Float32, pl.Float64)


def _fast(fn, source, weights, max_future_s) -> pl.DataFrame | None:
    try:
        return fn(source, weights, max_future_s)
    except pl.exceptions.PolarsError:    # e.g. a cast out of range: the row path decides
        return None


def _text_like(dtype) -> bool:
    """Columns whose values the row path turns into the same strings polars casts to."""
    return dtype in (pl.String, pl.Null, pl.Categorical) or dtype in _INTEGER


def _vectorised(frame: pl.DataFrame, weights: dict[str, float] | None,
                max_future_s: float = DEFAULT_MAX_FUTURE_S) -> pl.DataFrame | None:
    """``frame`` validated and normalised column by column; None if any row may be bad."""
    schema = frame.schema
    if frame.width == 0 or set(schema) - set(EVENT_SCHEMA):
        return None
    cols = []
    for name in TEXT_FIELDS:
        if name not in schema:
            cols.append(pl.lit(None, pl.String).alias(name))
        elif _text_like(schema[name]):
            cols.append(pl.col(name).cast(pl.String))
        else:
            return None
    pos = schema.get("position", pl.Null)
    if pos != pl.Null and pos not in _INTEGER:
        return None
    cols.append(pl.col("position").cast(pl.Int64) if "position" in schema
                else pl.lit(None, pl.Int64).alias("position"))
    ts = schema.get("timestamp", pl.Null)
    if ts == pl.String:
        values = frame["timestamp"].drop_nulls().unique()
        parsed = {v: parse_timestamp(v) for v in values.to_list()}
        if any(p is None for p in parsed.values()):
            return None
        cols.append(pl.col("timestamp").replace_strict(parsed, default=None,
                                                       return_dtype=pl.Float64))
    elif ts == pl.Null or ts in _INTEGER or ts in _FLOAT:
        cols.append(pl.col("timestamp").cast(pl.Float64) if "timestamp" in schema
                    else pl.lit(None, pl.Float64).alias("timestamp"))
    else:
        return None
    out = frame.select(cols)
    bad = out.select(
        pl.any_horizontal((pl.col(c).is_null() | (pl.col(c) == "")).any() for c in REQUIRED)
        | (pl.col("entity_id") == "").any()
        | (pl.col("entity_id").is_null()
           & (pl.col("request_id").is_null() | (pl.col("request_id") == ""))).any()
        | ((pl.col("position") < 1) | (pl.col("position") > MAX_POSITION)).any()
        | pl.any_horizontal((pl.col(c).str.len_chars() > n).any()
                            for c, n in MAX_CHARS.items())
        | (~valid_expr("timestamp", max_future=max_future_s)).fill_null(False).any()).item()
    if bad:
        return None
    if weights is not None and not out["type"].is_in(list(weights)).all():
        return None
    missing = out["event_id"].is_null()
    if missing.any():
        at = missing.arg_true()
        derived = [derived_event_id(r) for r in out[at].iter_rows(named=True)]
        out = out.with_columns(out["event_id"].scatter(at, derived))
    out = out.with_columns(pl.col("timestamp").fill_null(time.time()))
    return out.select(list(EVENT_SCHEMA)).cast(dict(EVENT_SCHEMA))


def _read_jsonl_fast(data: bytes, weights: dict[str, float] | None,
                     max_future_s: float = DEFAULT_MAX_FUTURE_S) -> pl.DataFrame | None:
    """The vectorised path for JSONL, when polars reads exactly what ``json`` would."""
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        return None                  # a lone CR ends a line for Python, not for polars
    if _SURROGATE.search(data):
        return None                  # polars reads a lone "\ud800" as "\x00": the row path
    try:
        frame = pl.read_ndjson(data, infer_schema_length=None)
    except Exception:                # invalid JSON, not objects, empty...: the row path says
        return None                  # (polars raises more than PolarsError here)
    if set(frame.columns) - set(EVENT_SCHEMA) or not _same_as_json(data, frame):
        return None
    return _vectorised(frame, weights, max_future_s)


def _same_as_json(data: bytes, frame: pl.DataFrame) -> bool:
    """False when polars may have read a value differently from ``json.loads``: a
    string column also holding fractions, booleans or objects (polars writes them as
    text its own way, the row path with ``str()``; integers read the same), numbers
    among ISO 8601 timestamps (the row path reads them as epoch seconds), or a key
    repeated in an object (polars keeps the first value, ``json`` the last)."""
    text = [c.encode() for c in frame.columns if frame.schema[c] == pl.String]
    ids = b"|".join(re.escape(c) for c in text if c != b"timestamp")
    if ids and re.search(rb'"(?:' + ids + rb')"\s*:(?!\s*(?:"|null\b|-?\d{1,18}\s*[,}]))',
                         data):
        return False
    if b"timestamp" in text and re.search(rb'"timestamp"\s*:(?!\s*(?:"|null\b))', data):
        return False                 # a number there is epoch seconds, a string ISO 8601
    nulls: dict[bytes, int] = {}
    if b"null" in data:
        names = b"|".join(re.escape(c.encode()) for c in frame.columns)
        for key in re.findall(rb'"(' + names + rb')"\s*:\s*null', data):
            nulls[key] = nulls.get(key, 0) + 1
    counts = frame.select(pl.all().count()).row(0)
    for name, present in zip(frame.columns, counts):
        key = name.encode()
        if data.count(b'"' + key + b'"') != present + nulls.get(key, 0):
            return False
    return True


def learnable(events: pl.DataFrame, parts: list, max_future_s: float = DEFAULT_MAX_FUTURE_S,
              now: float | None = None) -> pl.DataFrame:
    """The logged ``events`` (read from ``parts``: paths or pieces) a learner may learn
    from: those whose timestamp follows the rule of :mod:`ltrr.timestamps`. A log written
    before timestamps were checked may hold NaN, infinite or far-future ones; they are
    left out with a warning that counts them, names their parts and the repair
    (``ltrr train SPEC --quarantine-invalid``)."""
    ok = valid_expr("timestamp", now, max_future_s).fill_null(True)
    bad = events.filter(~ok)
    if bad.height == 0:
        return events
    ids = bad["event_id"].implode()
    named = []
    for path in dict.fromkeys(getattr(p, "path", p) for p in parts):
        try:
            n = pl.scan_parquet(path).filter(pl.col("event_id").is_in(ids)).select(
                pl.len()).collect().item()
        except Exception:                 # gone (compacted, quarantined): name it anyway
            n = None
        if n is None or n:
            named.append(f"{Path(path).name} ({n if n is not None else '?'})")
            with _SKIPPED_LOCK:
                _SKIPPED.setdefault(str(Path(path).parent), {})[Path(path).name] = n or 0
    log.warning("skipped %d logged events with invalid timestamps (e.g. %s) in %s: no "
                "learner learns them. To move them out of the log, run `ltrr train "
                "SPEC --quarantine-invalid`", bad.height,
                f"timestamp {bad['timestamp'][0]!r}", ", ".join(named) or "the event log")
    return events.filter(ok)


_SKIPPED: dict[str, dict[str, int]] = {}     # events folder → part → events skipped
_SKIPPED_LOCK = threading.Lock()


def skipped_invalid(directory: Path) -> dict[str, int]:
    """The parts of the event log in ``directory`` whose invalid events this process's
    learners skipped (part → events): a server reports them in ``/health``."""
    with _SKIPPED_LOCK:
        return dict(_SKIPPED.get(str(directory), {}))


def quarantine_invalid(elog: "EventLog", max_future_s: float = DEFAULT_MAX_FUTURE_S,
                       now: float | None = None) -> dict[str, int]:
    """Move the logged events whose timestamp breaks the rule out of the log, holding the
    append lock. Parts are immutable, so each affected part is replaced the way
    compaction replaces parts: by a new compacted part of its valid rows that names it
    as input and keeps its appends' names and (new) row counts, so learners' cursors
    keep their meaning; the rename of the new part is the commit point. The moved events
    go to ``quarantine/invalid-<part>`` beside a ``.reason`` file. Returns part name →
    events moved."""
    import time as _time
    import uuid

    from ltrr.feedback.id_index import IdIndex
    from ltrr.parquet_log import _INPUTS, _SOURCES, COMPACTED_PID, is_compacted, part_time_ns
    from ltrr.state import atomic_write_bytes, file_lock

    moved: dict[str, int] = {}
    ok = valid_expr("timestamp", now, max_future_s).fill_null(True)
    with file_lock(elog.lock_path):
        for part in elog.parts():
            try:
                frame = pl.read_parquet(part)
            except Exception:             # damaged: the log quarantines it when read
                continue
            keep = frame.select(ok.alias("ok")).to_series()
            n_bad = int((~keep).sum())
            if not n_bad:
                continue
            sources = [(part.name, frame.height)]
            if is_compacted(part):
                info = elog._compaction(part)
                if info is None:
                    continue
                sources = info[_SOURCES]
            kept, offset = [], 0
            for name, rows in sources:
                kept.append([name, int(keep.slice(offset, rows).sum())])
                offset += rows
            dest = elog.quarantine_dir / f"invalid-{part.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            frame.filter(~keep).write_parquet(buf)
            atomic_write_bytes(dest, buf.getvalue())
            (dest.parent / (dest.name + ".reason")).write_text(
                f"{_time.strftime('%Y-%m-%dT%H:%M:%SZ', _time.gmtime())} {n_bad} events "
                f"with invalid timestamps moved out of {part.name}\n")
            name = (f"part-{part_time_ns(part):020d}-{COMPACTED_PID}-"
                    f"{uuid.uuid4().hex[:8]}.parquet")
            buf = io.BytesIO()
            frame.filter(keep).write_parquet(buf, compression="zstd", metadata={
                _INPUTS: json.dumps([part.name]), _SOURCES: json.dumps(kept)})
            atomic_write_bytes(elog.directory / name, buf.getvalue())   # the commit point
            elog._remove([part])
            moved[part.name] = n_bad
            IdIndex(elog).invalidate()      # its ids may be sent again, corrected
            log.warning("%s: moved %d events with invalid timestamps to %s", part, n_bad,
                        dest)
    return moved


class EventLog(ParquetLog):
    """The durable feedback log of a pipeline (``<state_dir>/events``). Its appenders
    take turns under the append lock, so part names sort in append order (learners'
    cursors rely on it)."""

    monotonic = True

    def __init__(self, directory: Path):
        super().__init__(directory, EVENT_SCHEMA)

    def append_new(self, events: pl.DataFrame, known: "LoggedIds | None" = None
                   ) -> pl.DataFrame:
        """Append the events whose ids are not logged yet; return what was appended
        (see :meth:`append_unlogged`)."""
        return self.append_unlogged(events, known)[0]

    def append_unlogged(self, events: pl.DataFrame, known: "LoggedIds | None" = None
                        ) -> tuple[pl.DataFrame, Path | None]:
        """Append, as one part, the events whose ids are not logged yet (the first of
        each id within ``events``); return them (with any extra columns of ``events``,
        which are not logged) and the new part. Safe with other writers of the same log
        (``ltrr serve`` workers, ``ltrr feedback``): they take turns under the append
        lock, so an id is never logged twice.

        The ids are checked against the log's id index (:mod:`ltrr.feedback.id_index`,
        ``events/ids/``), not the log: the time grows with log(size). A long-lived
        writer passes its :class:`LoggedIds`, which keeps the index's runs mapped.
        """
        from ltrr.state import file_lock

        events = events.unique("event_id", keep="first", maintain_order=True)
        index = (known or LoggedIds()).index(self)
        with file_lock(self.lock_path):       # another writer cannot log the same id meanwhile
            index.sync()
            if events.height:
                events = events.filter(pl.Series(~index.known(events["event_id"])))
            path = self.append_frame(events)
            if path is not None:
                index.add(events["event_id"], path.name)
        return events, path


class LoggedIds:
    """A long-lived writer's handle on the id index of the event log it appends to
    (:class:`~ltrr.feedback.id_index.IdIndex`): the runs stay mapped between appends."""

    def __init__(self) -> None:
        self._index = None

    def index(self, elog: "EventLog"):
        from ltrr.feedback.id_index import IdIndex

        if self._index is None or self._index.elog.directory != elog.directory:
            self._index = IdIndex(elog)
        return self._index
