"""One JSON error format for every failure: ``{"error", "field", "hint"}``.

Bad input is a 4xx naming the request field at fault and how to fix it; an
:class:`~ltrr.errors.LtrrError` keeps its message, field and hint; anything else
is a logged bug answered with a JSON 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ltrr.errors import Location, LtrrError, StateError

log = logging.getLogger("ltrr.serve")

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "an integer",
               float: "a number", bool: "a boolean", type(None): "null"}


class ApiError(Exception):
    """An error answered as ``status`` with the JSON error body."""

    def __init__(self, status: int, error: str, *, field: str | None = None,
                 hint: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.field, self.hint = status, error, field, hint
        self.headers = headers

    def body(self) -> bytes:
        return error_body(self.error, self.field, self.hint)


def error_body(error: str, field: str | None = None, hint: str | None = None) -> bytes:
    return json.dumps({"error": error, "field": field, "hint": hint},
                      ensure_ascii=False).encode()


def from_ltrr(exc: LtrrError, status: int | None = None) -> ApiError:
    """An LtrrError as an API error (by default 503 for a StateError, the server's own
    state failing, else 422); ``where`` like ``request field events[3]`` and the error's
    field become ``events[3].type``."""
    if status is None:
        status = 503 if isinstance(exc, StateError) else 422
    where, field = exc.where, exc.field
    prefix = None
    if isinstance(where, Location) and where.file.startswith("request field "):
        prefix = where.file[len("request field "):]
        where = None
    if prefix and field:
        field = f"{prefix}.{field}"
    elif prefix:
        field = prefix
    message = f"{field}: {exc.message}" if field else exc.message
    if where is not None:
        message = f"{where}: {message}"
    if exc.node:
        message = f"node '{exc.node}': {message}"
    for other in exc.also:
        message += f"; {other.render()}"
    return ApiError(status, message, field=field, hint=exc.hint)


def _field_path(loc: tuple, known: frozenset[str]) -> str | None:
    """pydantic's ``("events", 3, "type", "str")`` → ``events[3].type`` (type tags dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in known:
            out += ("." if out else "") + part
        else:
            break
    return out or None


def _describe(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def from_validation(exc, known: frozenset[str], example: str) -> ApiError:
    """A pydantic ValidationError of a request body as an API error (400 for bad JSON,
    else 422 on its first error, with the others' count)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    kind, loc = first["type"], tuple(first.get("loc", ()))
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return ApiError(400, f"request body is not valid JSON ({detail})" if detail
                        else "request body is not valid JSON", hint=(
                            f"send one JSON object encoded in UTF-8, e.g. {example}"))
    field = _field_path(loc, known)
    inner = (first.get("ctx") or {}).get("field")   # a whole-model rule names its field
    if inner in known:
        field = f"{field}.{inner}" if field else inner
    got = first.get("input")
    hint = (first.get("ctx") or {}).get("hint")     # a custom error may carry one
    if kind in ("extra_forbidden", "missing") and loc and isinstance(loc[-1], str):
        parent = _field_path(loc[:-1], known)
        field = f"{parent}.{loc[-1]}" if parent else str(loc[-1])
        what = "unknown field" if kind == "extra_forbidden" else "missing required field"
        message = f"{parent}: {what} '{loc[-1]}'" if parent else f"{what} '{loc[-1]}'"
    elif kind in ("model_type", "model_attributes_type", "dict_type") and not field:
        message = f"request body must be a JSON object, got {_describe(got)}"
        hint = f"e.g. {example}"
    else:
        message = first["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        message = message.replace("Input should", "should")
        if kind.endswith("_type") or kind.endswith("_parsing"):
            message = f"{message}, got {_describe(got)}"
        if kind == "string_pattern_mismatch" and field and field.endswith("request_id"):
            hint = "use letters, digits and . _ : - only, at most 128 characters (a UUID works)"
        if field:
            message = f"{field}: {message}"
    others = {_field_path(tuple(e.get("loc", ())), known) for e in errors[1:]} - {field}
    if others:
        message += f" (and errors in {len(others)} more field{'s' if len(others) > 1 else ''})"
    return ApiError(422, message, field=field, hint=hint)


def request_error(exc, model: type, example: str) -> ApiError:
    """A request body's validation error (``model``: the body's pydantic model), with the
    allowed fields or an example as hint."""
    from ltrr.feedback.schema import Event

    known = frozenset(model.model_fields) | frozenset(Event.model_fields)
    err = from_validation(exc, known, example)
    if "unknown field" in err.error:
        inner = Event if err.field and "]" in err.field else model
        err.hint = "allowed fields: " + ", ".join(inner.model_fields)
    elif "missing required field" in err.error:
        err.hint = f"e.g. {example}"
    return err
