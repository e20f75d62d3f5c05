"""Turn pydantic validation errors into one readable sentence each, with a location."""

from __future__ import annotations

import collections.abc
import difflib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from ltrr.errors import SpecError
from ltrr.spec.loader import PathKey, SourceMap

_NODE_LISTS = ("encoders", "slotters", "arms")
_SINGLETONS = ("policy", "merge", "ranker", "catalog", "output", "log", "feedback")


def node_and_field(data: Any, path: PathKey) -> tuple[str | None, str | None]:
    """Split a value path into the node id it belongs to and the field inside it."""
    if not path:
        return None, None
    head = path[0]
    if head in _NODE_LISTS and len(path) >= 2 and isinstance(path[1], int):
        node = f"{head}[{path[1]}]"
        try:
            node_id = data[head][path[1]].get("id")
            if isinstance(node_id, str):
                node = node_id
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        rest = path[2:]
    elif head in _SINGLETONS:
        node, rest = str(head), path[1:]
    else:
        node, rest = None, path
    field = ".".join(str(p) for p in rest) or None
    return node, field


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _unwrap(ann: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model class inside an annotation (``X | None``, ``list[X]``, ``dict[str, X]``)
    and whether a dict key sits between the field and that model in a value path."""
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, False
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (dict, collections.abc.Mapping):
        model, _ = _unwrap(args[1]) if len(args) == 2 else (None, False)
        return model, model is not None
    found = [m for m in (_unwrap(arg) for arg in args) if m[0] is not None]
    if len({m for m, _ in found}) > 1:
        return None, False          # a union of models: which one applies is not known here
    return found[0] if found else (None, False)


def _model_at(root: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model class describing the mapping at ``path`` (best effort)."""
    model: Any = root
    dict_key = False          # the next string in the path is a key of a dict[str, Model]
    for part in path:
        if isinstance(part, int):
            continue
        if dict_key:
            dict_key = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        model, dict_key = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _suggest(key: str, model: type[BaseModel] | None) -> str | None:
    close = difflib.get_close_matches(key, _allowed_keys(model), n=1)
    return close[0] if close else None


def _sentence(err: dict[str, Any], model: type[BaseModel] | None) -> tuple[str, str | None]:
    kind = err["type"]
    loc = err["loc"]
    value = err.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(model)
        close = _suggest(key, model)
        hint = f"did you mean '{close}'?" if close else (
            f"valid keys: {', '.join(sorted(allowed))}" if allowed else None)
        return f"unknown key '{key}'", hint
    if kind == "missing":
        return f"missing required key '{loc[-1]}'", "add it; `ltrr schema` lists every key"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{err['msg'].lower()}, got {value!r}", None
    if kind == "too_short":
        return f"{err['msg'].lower()}", "declare at least one entry"
    if kind == "string_pattern_mismatch":
        return f"{value!r} is not a valid id", "use a letter, then letters, digits, '_' or '-'"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        expected = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        close = difflib.get_close_matches(str(ctx.get("tag")), expected, n=1)
        hint = f"did you mean '{close[0]}'?" if close else None
        return (f"unknown {ctx.get('discriminator', 'kind').strip(chr(39))} "
                f"'{ctx.get('tag')}'; expected one of: {', '.join(expected)}", hint)
    if kind == "union_tag_not_found":
        disc = str((err.get("ctx") or {}).get("discriminator", "kind")).strip("'")
        return f"missing '{disc}', which says which variant this is", \
            f"add '{disc}:'; `ltrr schema --components` lists the variants"
    if kind == "literal_error":
        return f"{err['msg']}, got {value!r}", None
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{err['msg']}, got {shown}", None


def _walk(data: Any, path: PathKey) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _data_loc(data: Any, loc: PathKey) -> PathKey:
    """``loc`` without the segments pydantic adds that are not in the data (union tags)."""
    out: list[str | int] = []
    for i, p in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(data, dict) and p in data:
            data = data[p]
        elif isinstance(data, list) and isinstance(p, int) and p < len(data):
            data = data[p]
        elif isinstance(data, dict) and isinstance(p, str) and not last:
            continue        # e.g. the tag of a discriminated union: not a key of the data
        else:
            data = None
        out.append(p)
    return tuple(out)


def spec_errors(exc: ValidationError, *, root: type[BaseModel], data: Any, smap: SourceMap,
                prefix: PathKey = ()) -> SpecError:
    """One :class:`SpecError` for a validation failure; extra errors follow on new lines."""
    raw = []
    base = _walk(data, prefix)
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not isinstance(p, str) or not p.startswith("function-"))
        loc = _data_loc(base, loc)
        parent = _model_at(root, loc[:-1]) if err["type"] == "extra_forbidden" else None
        raw.append((err, loc, parent))
    # A misspelt required key shows up twice: as the unknown key and as the missing one.
    # Report only the typo (its hint names the missing key) — it is where the fix goes.
    explained = {(loc[:-1], _suggest(str(loc[-1]), parent))
                 for err, loc, parent in raw if err["type"] == "extra_forbidden"}
    errors = []
    for err, loc, parent in raw:
        if err["type"] == "missing" and (loc[:-1], loc[-1]) in explained:
            continue
        full = prefix + loc
        message, hint = _sentence(dict(err, loc=loc), parent)
        node, field = node_and_field(data, full)
        where = smap.locate(full, key=err["type"] == "extra_forbidden")
        errors.append(SpecError(message, where=where, node=node, field=field, hint=hint))
    first = errors[0]
    first.also = errors[1:]
    return first
