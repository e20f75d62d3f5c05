"""Data checks before anything opens: every file a spec names exists, reads, and has the
columns its nodes read, of a usable type.

Only schemas are read (Parquet footers, the first rows of text files), so ``ltrr
validate`` and every command find a wrong path or column name in well under a second,
each problem a located error (the spec's file:line:col, node, field) with the file's
columns as the hint. Nodes declare what they read with ``Component.tables``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltrr.components import ColumnUse
from ltrr.errors import DataError, LtrrError
from ltrr.files import shown, shown_names
from ltrr.tables import read_schema

if TYPE_CHECKING:
    import polars as pl

    from ltrr.compiler import Plan
    from ltrr.spec import Spec

_KIND_WORDS = {"scalar": "single values (not lists)", "text": "text or lists of text",
               "number": "numeric values", "string": "text", "any": "values"}


def check_data(plan: "Plan") -> None:
    """Raise the first data problem of ``plan`` (the others in ``.also``)."""
    problems = data_problems(plan)
    if problems:
        problems[0].also = problems[1:]
        raise problems[0]


def data_problems(plan: "Plan") -> list[LtrrError]:
    """Every data problem of ``plan``, located in its spec."""
    spec = plan.spec
    schemas = _Schemas(spec)
    cat = spec.model.catalog
    problems: list[LtrrError] = []
    catalog = schemas.of(cat.path, cat.format, ("catalog", "path"), "catalog file")
    if isinstance(catalog, LtrrError):
        problems.append(catalog)
    else:
        problems += _columns(spec, catalog, "catalog", Path(cat.path).name, (
            ColumnUse(cat.id, ("catalog", "id"), "scalar"),
            *((ColumnUse(cat.title, ("catalog", "title"), "text"),) if cat.title else ()),
            *(ColumnUse(c, ("catalog", "lists", c), "string", key=True) for c in cat.lists),
            *((ColumnUse(cat.types.column, ("catalog", "types", "column"), "string"),)
              if cat.types else ())))
        catalog = _split_lists(catalog, cat.lists)
    for node in plan.nodes:
        base = node.path + ("with",)
        for use in node.registration.cls.tables(node.params):
            uses = tuple(ColumnUse(c.name, base + tuple(c.path), c.kind, c.key)
                         for c in use.columns)
            if use.file is None:
                if not isinstance(catalog, LtrrError):
                    problems += _columns(spec, catalog, "catalog", Path(cat.path).name, uses)
                continue
            schema = schemas.of(use.file, use.format, base + tuple(use.path), use.what)
            if isinstance(schema, LtrrError):
                problems.append(schema)
            else:
                problems += _columns(spec, schema, use.what, Path(use.file).name, uses)
    return problems


class _Schemas:
    """Each file's schema read once (or the error reading it, located where it was
    first named)."""

    def __init__(self, spec: "Spec"):
        self.spec = spec
        self._read: dict[Path, Any] = {}

    def of(self, file: str, fmt: str | None, path: tuple, what: str
           ) -> "pl.Schema | LtrrError":
        resolved = self.spec.resolve(file)
        if resolved not in self._read:
            where = self.spec.locate(path)
            try:
                self._read[resolved] = read_schema(resolved, fmt, what=what, where=where)
            except LtrrError as exc:
                hint = exc.hint or (None if Path(file).expanduser().is_absolute() else
                                    f"the path is relative to the spec's folder, "
                                    f"{self.spec.base_dir}")
                self._read[resolved] = self.spec.error(DataError, exc.message, path,
                                                       hint=hint)
        return self._read[resolved]


def _columns(spec: "Spec", schema: "pl.Schema", what: str, file: str,
             uses: tuple[ColumnUse, ...]) -> list[LtrrError]:
    out: list[LtrrError] = []
    names = list(schema.names())
    for use in uses:
        if use.name not in schema:
            close = difflib.get_close_matches(use.name, names, n=1)
            hint = (f"did you mean '{shown(close[0])}'? " if close else "") + \
                f"{file} has: {shown_names(names)}"
            out.append(spec.error(DataError, f"{what} {file} has no column "
                                  f"'{shown(use.name)}'", use.path, hint=hint, key=use.key))
            continue
        dtype = schema[use.name]
        if not _fits(dtype, use.kind):
            out.append(spec.error(DataError, f"column '{shown(use.name)}' of {what} {file} "
                                  f"holds {dtype}, not {_KIND_WORDS[use.kind]}", use.path,
                                  hint=_type_hint(use.kind, names, schema), key=use.key))
    return out


def _split_lists(schema: "pl.Schema", lists: dict[str, str]) -> "pl.Schema":
    """The catalog's schema once its ``lists`` columns are split, as nodes see it."""
    import polars as pl

    if not lists:
        return schema
    return pl.Schema({c: pl.List(pl.String) if c in lists and _fits(t, "string") else t
                      for c, t in schema.items()})     # a wrong one is reported once


def _fits(dtype: "pl.DataType", kind: str) -> bool:
    if kind == "any":
        return True
    if kind == "string":
        return str(dtype).startswith(("String", "Categorical", "Enum"))
    if dtype.is_nested():
        inner = getattr(dtype, "inner", None)
        return kind == "text" and inner is not None and not inner.is_nested()
    if kind == "number":
        return dtype.is_numeric() or str(dtype) == "Boolean"
    return str(dtype) not in ("Null", "Binary", "Object")


def _type_hint(kind: str, names: list[str], schema: "pl.Schema") -> str:
    fitting = [n for n in names if _fits(schema[n], kind)]
    return (f"columns of {_KIND_WORDS[kind]}: {shown_names(fitting)}" if fitting
            else f"no column holds {_KIND_WORDS[kind]}")
