"""Tabular files a spec names — the catalog, relation and interaction files: their format
(Parquet, CSV, TSV, JSONL; the text formats optionally gzipped), their columns read
cheaply (the schema only: Parquet's footer, the first rows of a text file), and their
rows.

Errors are :class:`~ltrr.errors.DataError`s located where the spec names the file;
messages never echo more of a file than column names, shortened.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ltrr.errors import Location, DataError
from ltrr.files import check_file, first_line, shown, shown_names

if TYPE_CHECKING:
    import polars as pl

Format = Literal["parquet", "csv", "tsv", "jsonl"]
FORMATS: tuple[str, ...] = ("parquet", "csv", "tsv", "jsonl")
INFER_ROWS = 10_000         # a text file's column types are inferred from its first rows
SCHEMA_BYTES = 1 << 20      # ... or, gzipped, from its first MiB
_SEPARATOR = {"csv": ",", "tsv": "\t"}
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv",
             ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def infer_format(path: Path) -> Format | None:
    """The format its name says (``.csv``, ``.tsv.gz``, ``.parquet``...), else None."""
    name = path.name.lower().removesuffix(".gz")
    return _SUFFIXES.get(Path(name).suffix)  # type: ignore[return-value]


def table_format(path: Path, fmt: str | None, what: str, where: Location | None) -> str:
    """``fmt``, or the format ``path``'s name says; a located error if neither does."""
    if fmt is not None:
        return fmt
    found = infer_format(path)
    if found is None:
        raise DataError(f"cannot tell the format of the {what} {path.name} from its name",
                         where=where, hint="name it .parquet, .csv, .tsv or .jsonl (text "
                         "formats may end in .gz), or give its format")
    return found


def read_table(path: Path, fmt: str | None = None, *, what: str = "file",
               where: Location | None = None) -> "pl.DataFrame":
    """Every row of a tabular file."""
    check_file(path, what, error=DataError, where=where)
    fmt = table_format(path, fmt, what, where)
    try:
        return _read(path, fmt, None)
    except Exception as exc:
        raise DataError(f"cannot read the {what} {path.name} as {fmt}: {first_line(exc)}",
                         where=where) from exc


def read_schema(path: Path, fmt: str | None = None, *, what: str = "file",
                where: Location | None = None) -> "pl.Schema":
    """A tabular file's columns and types, without reading its rows (text formats: as
    inferred from the first MiB)."""
    import polars as pl

    check_file(path, what, error=DataError, where=where)
    fmt = table_format(path, fmt, what, where)
    try:
        if fmt == "parquet":
            return pl.scan_parquet(path).collect_schema()
        if not path.name.lower().endswith(".gz"):
            if fmt == "jsonl":
                return pl.scan_ndjson(path, infer_schema_length=INFER_ROWS).collect_schema()
            return pl.scan_csv(path, separator=_SEPARATOR[fmt],
                               infer_schema_length=INFER_ROWS).collect_schema()
        try:    # gzipped: the whole lines of its first MiB
            return _read(path, fmt, SCHEMA_BYTES).schema
        except Exception:      # a quoted field cut at that MiB, say: read it all
            return _read(path, fmt, None).schema
    except Exception as exc:
        raise DataError(f"cannot read the {what} {path.name} as {fmt}: {first_line(exc)}",
                         where=where, hint=_format_hint(path, fmt)) from exc


def column(frame: "pl.DataFrame", name: str, *, node: str, field: str,
           what: str = "catalog") -> "pl.Series":
    """``frame[name]``, or a DataError naming ``node`` and ``field`` with the columns there
    are (where a node reads what ``ltrr validate`` did not check: a plan compiled without
    ``check_data``)."""
    if name not in frame.columns:
        raise DataError(f"{what} has no column '{shown(name)}'", node=node, field=field,
                        hint=f"columns: {shown_names(frame.columns)}")
    return frame[name]


def list_values(column: str, separator: str | None = None) -> "pl.Expr":
    """``column`` as lists of trimmed, non-empty text: a text column of values joined by
    ``separator``, split; a list column (``separator`` None), its elements as text."""
    import polars as pl

    values = pl.col(column)
    if separator is not None:
        values = values.cast(pl.String).str.split(separator)
    item = pl.element().cast(pl.String).str.strip_chars()
    return values.list.eval(item.filter(item != ""))


def _format_hint(path: Path, fmt: str) -> str | None:
    said = infer_format(path)
    if said is not None and said != fmt:
        return f"its name says {said}: check the format given for it"
    return None


def _read(path: Path, fmt: str, limit: int | None) -> "pl.DataFrame":
    """Read ``path``; with ``limit``, only the whole lines within its first bytes."""
    import polars as pl

    if fmt == "parquet":
        return pl.read_parquet(path)
    raw = _text_bytes(path, limit)
    if fmt == "jsonl":
        return pl.read_ndjson(io.BytesIO(raw))
    return pl.read_csv(io.BytesIO(raw), separator=_SEPARATOR[fmt],
                       infer_schema_length=INFER_ROWS)


def _text_bytes(path: Path, limit: int | None) -> bytes:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(raw) > limit:
        raw = raw[:raw.rfind(b"\n", 0, limit) + 1] or raw[:limit]
    return raw
