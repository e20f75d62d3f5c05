"""Feedback events: schema, reading JSONL/Parquet files with located errors, the event log.

An event says that a user did something (``type``: click, play, favorite, skip,
impression, ...) with an entity, usually in answer to a logged request. Ingestion
is idempotent by ``event_id``: replaying a file adds nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import polars as pl

from ltrr.errors import Location, RunError
from ltrr.parquet_log import ParquetLog
from ltrr.timestamps import parse_timestamp

EVENT_SCHEMA = pl.Schema({
    "event_id": pl.String,       # unique; derived from the other fields when absent
    "request_id": pl.String,     # the decision this answers (None for organic events)
    "user_id": pl.String,
    "entity_id": pl.String,
    "type": pl.String,
    "position": pl.Int32,        # 1-based rank at which the entity was shown
    "timestamp": pl.Float64,     # seconds since the epoch
    "query": pl.String,          # optional: the query text, for events without a request
})
REQUIRED = ("entity_id", "type")


def derived_event_id(row: dict) -> str:
    """A stable id for an event that came without one (same event → same id)."""
    key = "\x1f".join(str(row.get(k)) for k in ("request_id", "user_id", "entity_id", "type",
                                                "position", "timestamp", "query"))
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def _timestamp(value, where: Location) -> float | None:
    if value is None:
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        raise RunError(f"timestamp {value!r} is neither epoch seconds nor ISO 8601",
                       where=where, field="timestamp")
    return parsed


def _check_row(row: dict, where: Location, weights: dict[str, float] | None) -> dict:
    unknown = set(row) - set(EVENT_SCHEMA)
    if unknown:
        raise RunError(f"unknown field(s) {', '.join(sorted(unknown))}", where=where,
                       hint=f"fields: {', '.join(EVENT_SCHEMA)}")
    for name in REQUIRED:
        if not isinstance(row.get(name), (str, int)) or row.get(name) == "":
            raise RunError(f"missing or empty '{name}'", where=where, field=name)
    out = {k: row.get(k) for k in EVENT_SCHEMA}
    for k in ("event_id", "request_id", "user_id", "entity_id", "type", "query"):
        if out[k] is not None:
            out[k] = str(out[k])
    if weights is not None and out["type"] not in weights:
        raise RunError(f"event type '{out['type']}' has no weight in the spec", where=where,
                       field="type", hint="declare it under feedback.weights, known types: "
                       + ", ".join(sorted(weights)))
    pos = out["position"]
    if pos is not None and (not isinstance(pos, int) or isinstance(pos, bool) or pos < 1):
        raise RunError(f"position must be a positive integer, got {pos!r}", where=where,
                       field="position")
    out["timestamp"] = _timestamp(out["timestamp"], where)
    if out["event_id"] is None:
        out["event_id"] = derived_event_id(out)   # before the default time: replays match
    if out["timestamp"] is None:
        out["timestamp"] = time.time()
    return out


def events_from_rows(rows: list, where: "Callable[[int], Location]",
                     weights: dict[str, float] | None = None) -> pl.DataFrame:
    """Validated events from already-parsed rows (e.g. an HTTP request's JSON body).

    ``where(i)`` locates row ``i`` in error messages (e.g. ``request field events[3]``).
    """
    checked = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RunError("each event must be a JSON object", where=where(i))
        checked.append(_check_row(row, where(i), weights))
    return pl.DataFrame(checked, schema=EVENT_SCHEMA, orient="row") if checked else \
        EVENT_SCHEMA.to_frame()


def read_events(path: Path, weights: dict[str, float] | None = None) -> pl.DataFrame:
    """Events from a JSONL (one object per line) or Parquet file, validated.

    Errors name the file and line (JSONL) or row (Parquet) and the field.
    """
    path = Path(path)
    if not path.exists():
        raise RunError("events file not found", where=Location(str(path)))
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        rows = frame.to_dicts()
        checked = [_check_row(r, Location(f"{path} row {i + 1}"), weights)
                   for i, r in enumerate(rows)]
    else:
        checked = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = Location(str(path), n)
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise RunError(f"invalid JSON: {exc}", where=where) from None
                if not isinstance(obj, dict):
                    raise RunError("each line must be a JSON object", where=where)
                checked.append(_check_row(obj, where, weights))
    return pl.DataFrame(checked, schema=EVENT_SCHEMA, orient="row") if checked else \
        EVENT_SCHEMA.to_frame()


class EventLog(ParquetLog):
    """The durable feedback log of a pipeline (``<state_dir>/events``)."""

    def __init__(self, directory: Path):
        super().__init__(directory, EVENT_SCHEMA)

    def append_new(self, events: pl.DataFrame) -> pl.DataFrame:
        """Append the events whose ids are not logged yet; return what was appended."""
        events = events.unique("event_id", keep="first", maintain_order=True)
        seen = self.column("event_id")
        if seen.len():
            events = events.filter(~pl.col("event_id").is_in(seen.implode()))
        self.append_frame(events)
        return events
