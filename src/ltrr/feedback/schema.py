"""The feedback event: one pydantic model, and everything derived from it.

:class:`Event` is the only definition of an event's fields, types, limits and rules. The
HTTP API validates ``/feedback`` bodies with it (and documents it in OpenAPI), the row
path of events files validates each line with it, and the vectorised path of
``ltrr.feedback.events`` reads its column list, polars types, required fields and limits
from it (:data:`EVENT_SCHEMA`, :data:`REQUIRED`, :data:`TEXT_FIELDS`, :data:`MAX_CHARS`,
:data:`MAX_POSITION`). The rules that depend on the pipeline (event types need a weight,
how far ahead of the clock a timestamp may be) come in the validation context
(:func:`context`).
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any, Callable

import polars as pl
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints,
                      ValidationError, ValidationInfo, field_validator, model_validator)
from pydantic_core import PydanticCustomError

from ltrr.errors import Location, RunError
from ltrr.timestamps import DEFAULT_MAX_FUTURE_S, check_timestamp

MAX_POSITION = 2**31 - 1            # positions are logged as Int32
MAX_ID_CHARS = 256                  # ids and event types
MAX_QUERY_CHARS = 100_000


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("event_value", "contains a lone UTF-16 surrogate (invalid "
                                  "Unicode)", {"hint": "send valid UTF-8 text"}) from None
    return text


def _text(most: int) -> Any:
    """Valid Unicode text of at most ``most`` characters."""
    return Annotated[str, StringConstraints(max_length=most), AfterValidator(_valid_unicode)]


ShortText = _text(MAX_ID_CHARS)
#: An id: text, or an integer logged as its decimal text.
Id = Annotated[ShortText | int, AfterValidator(str)]


class Event(BaseModel):
    """One feedback event: a user did something (``type``) with an entity, usually in
    answer to a logged request."""

    model_config = ConfigDict(extra="forbid", strict=True)

    event_id: Id | None = Field(None, description=(
        "Unique id; the same id is logged once (retries are safe). Derived from the other "
        "fields when absent."))
    request_id: Id | None = Field(None, description=(
        "The `request_id` of the search this answers (null for organic events)."))
    user_id: Id | None = Field(None)
    entity_id: Id | None = Field(None, description=(
        "The entity engaged with; null for an event about the whole answer (e.g. "
        "`abandon`: nothing useful), which then needs its `request_id`."))
    type: ShortText = Field(description=(
        "Event type, one of the spec's `feedback.weights` (default: click, play, favorite, "
        "purchase, skip, impression)."), examples=["click"])
    position: int | None = Field(None, description="1-based rank it was shown at.",
                                 json_schema_extra={"minimum": 1, "maximum": MAX_POSITION})
    timestamp: float | ShortText | None = Field(None, description=(
        "Epoch seconds or ISO 8601; default: when it was received. Finite, not before "
        "1970, at most the spec's `feedback.max_future_s` (default one day) ahead of the "
        "clock."))
    query: _text(MAX_QUERY_CHARS) | None = Field(None, description=(
        "The query text, for events without a request."))

    @field_validator("entity_id", "type")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        if value == "":
            raise PydanticCustomError("event_value", f"missing or empty '{info.field_name}'")
        return value

    @model_validator(mode="after")
    def _answer_or_entity(self) -> "Event":
        if self.entity_id is None and not self.request_id:
            raise PydanticCustomError(
                "event_value", "missing or empty 'entity_id'",
                {"field": "entity_id",
                 "hint": "an event about a whole answer (no entity_id, e.g. abandon) needs "
                         "the request_id of that answer"})
        return self

    @field_validator("type")
    @classmethod
    def _weighted(cls, value: str, info: ValidationInfo) -> str:
        weights = (info.context or {}).get("weights")
        if weights is not None and value not in weights:
            raise PydanticCustomError(
                "event_value", "event type '{type}' has no weight in the spec",
                {"type": value, "hint": "declare it under feedback.weights, known types: "
                 + ", ".join(sorted(weights))})
        return value

    @field_validator("position")
    @classmethod
    def _position(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise PydanticCustomError("event_value", "position must be a positive integer "
                                      "(1 or more), got {value}", {"value": value})
        if value is not None and value > MAX_POSITION:
            raise PydanticCustomError("event_value", "position {value} is too large (at "
                                      "most {most})", {"value": value, "most": MAX_POSITION})
        return value

    @field_validator("timestamp")
    @classmethod
    def _time(cls, value: float | str | None, info: ValidationInfo) -> float | None:
        if value is None:
            return None
        ctx = info.context or {}
        try:
            return check_timestamp(value, max_future=ctx.get("max_future_s",
                                                             DEFAULT_MAX_FUTURE_S))
        except ValueError as exc:
            raise PydanticCustomError("event_value", str(exc), {
                "hint": "send epoch seconds or ISO 8601 of when it happened; the log and "
                        "every learner keep this time"}) from None


def context(weights: dict[str, float] | None = None,
            max_future_s: float = DEFAULT_MAX_FUTURE_S) -> dict[str, Any]:
    """The pipeline's rules for :class:`Event` validation: ``weights`` (None: any type)
    and the spec's ``feedback.max_future_s``."""
    return {"weights": weights, "max_future_s": max_future_s}


# --- derived from the model ------------------------------------------------------------------

def _dtype(name: str) -> pl.DataType:
    if name == "position":
        return pl.Int32
    if name == "timestamp":
        return pl.Float64
    return pl.String


#: The event log's columns, in the model's order.
EVENT_SCHEMA = pl.Schema({name: _dtype(name) for name in Event.model_fields})
REQUIRED = tuple(n for n, f in Event.model_fields.items() if f.is_required())
TEXT_FIELDS = tuple(n for n in Event.model_fields if EVENT_SCHEMA[n] == pl.String)
#: Text field → most characters.
MAX_CHARS = {n: MAX_QUERY_CHARS if n == "query" else MAX_ID_CHARS for n in TEXT_FIELDS}
_ID_FIELDS = tuple(n for n in Event.model_fields if n != "event_id")


def _id_of(values) -> str:
    return hashlib.sha1("\x1f".join(map(str, values)).encode()).hexdigest()[:20]


def derived_event_id(row: dict) -> str:
    """A stable id for an event that came without one (same event → same id)."""
    return _id_of(row.get(k) for k in _ID_FIELDS)


def event_row(event: Event) -> dict[str, Any]:
    """A validated event as a row of the log: a derived id when it has none (before the
    default time, so a replay matches), the current time when it has no timestamp."""
    row = event.model_dump()
    if row["event_id"] is None:
        row["event_id"] = derived_event_id(row)
    if row["timestamp"] is None:
        row["timestamp"] = time.time()
    return row


def frame_of(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Log rows as a frame of :data:`EVENT_SCHEMA`."""
    return pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row") if rows else \
        EVENT_SCHEMA.to_frame()


def validate(row: Any, where: Location, ctx: dict[str, Any]) -> dict[str, Any]:
    """One parsed event (e.g. a line of a JSONL file) as a log row; a RunError at
    ``where`` naming the field otherwise."""
    if not isinstance(row, dict):
        raise RunError("each event must be a JSON object", where=where)
    try:
        return event_row(Event.model_validate(row, context=ctx))
    except ValidationError as exc:
        raise event_error(exc, where) from None


def event_error(exc: ValidationError, where: Location) -> RunError:
    """The first error of an :class:`Event` validation as a located RunError."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    kind, loc = first["type"], tuple(first.get("loc", ()))
    field = str(loc[0]) if loc else (first.get("ctx") or {}).get("field")
    hint = (first.get("ctx") or {}).get("hint")
    if kind == "extra_forbidden":
        unknown = sorted({str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"})
        return RunError(f"unknown field(s) {', '.join(unknown)}", where=where,
                        hint=f"fields: {', '.join(EVENT_SCHEMA)}")
    if kind == "string_unicode":       # strict str refuses a lone surrogate first
        return RunError(f"'{field}' contains a lone UTF-16 surrogate (invalid Unicode)",
                        where=where, field=field, hint="send valid UTF-8 text")
    if kind == "missing" or (field in REQUIRED and first.get("input") is None):
        return RunError(f"missing or empty '{field}'", where=where, field=field)
    message = first["msg"].replace("Input should", "should")
    if kind.endswith("_type"):
        message = f"{message}, got {first.get('input')!r}"
    return RunError(message, where=where, field=field, hint=hint)


Where = Callable[[int], Location]
