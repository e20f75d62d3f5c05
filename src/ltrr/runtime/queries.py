"""Reading query files (TSV or JSONL) into :class:`~ltrr.types.Query` objects."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ltrr.errors import Location, RunError
from ltrr.files import check_file
from ltrr.types import Query


def read_text(path: Path, what: str = "file") -> str:
    """A text file's content, transparently gunzipped when it ends in .gz.

    Anything but a regular file (a folder, a pipe, a device) is refused before reading."""
    check_file(path, what, error=RunError)
    if path.name.endswith(".gz"):
        return gzip.decompress(path.read_bytes()).decode("utf-8")
    return path.read_text(encoding="utf-8")


def _stem_suffix(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return Path(name).suffix.lower()


def read_queries(path: Path | str, *, with_lines: bool = False) -> list:
    """TSV: ``id<TAB>query`` per line. JSONL: ``{"id", "query" | "text", "user_id"?}``.

    Errors name the file and line. ``with_lines``: ``(line number, Query)`` pairs.
    """
    path = Path(path)
    try:
        lines = read_text(Path(path), "query file").splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise RunError(f"cannot read query file: {exc}", where=Location(str(path))) from None
    jsonl = _stem_suffix(path) in (".jsonl", ".json", ".ndjson")
    out: list[tuple[int, Query]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        where = Location(str(path), n)
        if jsonl:
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise RunError(f"invalid JSON: {exc}", where=where) from None
            text = obj.get("query", obj.get("text")) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise RunError("each line needs a string field 'query' (or 'text')", where=where)
            qid = str(obj.get("id", obj.get("_id", n)))
            user = obj.get("user_id")
            out.append((n, Query(qid, text, str(user) if user is not None else None,
                                 obj.get("context") or {})))
        else:
            qid, sep, text = line.partition("\t")
            if not sep:
                raise RunError("expected 'id<TAB>query'", where=where,
                               hint="separate the id and the query with a tab, or use JSONL")
            out.append((n, Query(qid.strip(), text.strip())))
    return out if with_lines else [q for _, q in out]
