"""``ltrr init``: a commented, working spec written from a catalog's columns.

The columns are read (a sample of rows) and given roles by their types and values, never
by their names alone: the id (unique scalar values), the title (short unique-ish text),
descriptions (longer text), attributes (list columns, delimited text, or text with few
distinct values), a popularity prior (a non-negative numeric column). Each role becomes
part of a pipeline — BM25 fields with boosts, dictionary slots, an entity lookup, the
memory arm, graph relations (the catalog's own attribute lists; co-occurrence from an
interactions file) — and the spec says in comments why, so a user can edit it. The text
returned validates (``init`` checks it with :func:`ltrr.compiler.load_plan`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ltrr.errors import DataError
from ltrr.files import shown
from ltrr.tables import read_table

if TYPE_CHECKING:
    import polars as pl

SAMPLE_ROWS = 20_000         # rows read to judge a column
DELIMITERS = ("|", ";")      # text columns holding lists joined by one of these
DESCRIPTION_CHARS = 40       # mean length above which text is a description, not a name
NAME = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class Roles:
    """What each catalog column is for."""

    id: str
    title: str | None = None
    descriptions: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)          # list-valued after `lists`
    lists: dict[str, str] = field(default_factory=dict)          # delimited text → separator
    prior: str | None = None
    prior_log: bool = False
    rows: int = 0


@dataclass
class Interactions:
    """The interactions file's columns: who, what, how much."""

    path: str
    user: str
    entity: str
    value: str | None = None


def catalog_roles(frame: "pl.DataFrame", id_column: str | None = None) -> Roles:
    """The role of each column of (a sample of) a catalog."""
    import polars as pl

    n = frame.height
    scalar = [c for c in frame.columns if not frame[c].dtype.is_nested()]
    if id_column is None:
        unique = [c for c in scalar if frame[c].null_count() == 0 and frame[c].n_unique() == n]
        if not unique:
            raise DataError("no column has a distinct value on every row to serve as the id",
                            hint="add an id column, or name one with --id")
        named = [c for c in unique if c.lower() in ("id", "_id") or c.lower().endswith(
            ("_id", "id"))]
        id_column = (named or unique)[0]
    roles = Roles(id=id_column, rows=n)
    texts = []
    for c in frame.columns:
        if c == id_column:
            continue
        s = frame[c]
        if s.dtype.is_nested():
            if getattr(s.dtype, "inner", None) == pl.String:
                roles.attributes.append(c)
            continue
        if s.dtype.is_numeric():
            values = s.drop_nulls()
            if roles.prior is None and len(values) and values.min() >= 0 \
                    and values.n_unique() > 2:       # a count, a score: the first one
                roles.prior = c
                roles.prior_log = float(values.max()) > 1.0
            continue
        if s.dtype != pl.String:
            continue
        values = s.drop_nulls()
        if not len(values):
            continue
        sep = _delimiter(values)
        if sep is not None:
            roles.lists[c] = sep
            roles.attributes.append(c)
        elif values.str.len_chars().mean() > DESCRIPTION_CHARS:
            roles.descriptions.append(c)
        elif values.n_unique() <= max(2, min(1000, n // 20)):
            roles.attributes.append(c)          # a category: few values, many entities
        else:
            texts.append((values.n_unique() / len(values), -values.str.len_chars().mean(), c))
    if texts:
        roles.title = max(texts)[2]              # the most distinct, then the shortest
        roles.descriptions = [t[2] for t in sorted(texts, reverse=True)[1:]] + \
            roles.descriptions
    return roles


def _delimiter(values: "pl.Series") -> str | None:
    """The separator of a text column that holds joined lists, if it does."""
    sample = values.head(2000)
    for sep in DELIMITERS:
        joined = sample.str.contains(sep, literal=True).mean()
        if joined is not None and joined >= 0.2:
            parts = sample.str.split(sep).explode().str.strip_chars()
            if parts.n_unique() <= max(50, len(parts) // 10):   # few values, shared
                return sep
    return None


def interactions_roles(frame: "pl.DataFrame", path: str, catalog: "pl.DataFrame",
                       roles: Roles) -> Interactions:
    """Which columns of an interactions file are the user, the entity and a value."""
    ids = set(catalog[roles.id].cast(str).to_list())
    best, overlap = None, 0.0
    for c in frame.columns:
        if frame[c].dtype.is_nested():
            continue
        values = frame[c].drop_nulls().cast(str).head(5000)
        share = sum(v in ids for v in values.to_list()) / max(1, len(values))
        if share > overlap or (share == overlap and c == roles.id):
            best, overlap = c, share
    if best is None or overlap < 0.5:
        raise DataError(f"no column of {Path(path).name} holds the catalog's ids "
                        f"({shown(roles.id)})", hint="the interactions need a column of "
                        "catalog ids")
    rest = [c for c in frame.columns if c != best and not frame[c].dtype.is_nested()]
    users = [c for c in rest if "user" in c.lower()] or [
        c for c in rest if not frame[c].dtype.is_float()]
    if not users:
        raise DataError(f"no column of {Path(path).name} names the user",
                        hint="the interactions need a user (or session) column")
    user = users[0]
    value = next((c for c in rest if c != user and frame[c].dtype.is_numeric()
                  and "time" not in c.lower() and frame[c].min() is not None
                  and frame[c].min() >= 0), None)
    return Interactions(path, user, best, value)


def write_spec(catalog_path: Path, out: Path, *, interactions: Path | None = None,
               id_column: str | None = None, name: str | None = None) -> str:
    """The spec text for ``catalog_path`` (paths relative to ``out``'s folder)."""
    frame = _sample(catalog_path, "catalog file")
    roles = catalog_roles(frame, id_column)
    links = None
    if interactions is not None:
        inter = _sample(interactions, "interactions file")
        links = interactions_roles(inter, _relative(interactions, out), frame, roles)
    return _render(roles, _relative(catalog_path, out), links,
                   name or NAME.sub("-", catalog_path.name.split(".")[0]).strip("-") or "my")


def _sample(path: Path, what: str) -> "pl.DataFrame":
    return read_table(path, what=what).head(SAMPLE_ROWS)


def _relative(path: Path, out: Path) -> str:
    return os.path.relpath(path.resolve(), out.resolve().parent)


def _q(value: str) -> str:
    """A YAML scalar for a column name or path."""
    import json

    return value if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", value) else json.dumps(value)


def _render(roles: Roles, catalog: str, links: Interactions | None, name: str) -> str:
    lines = [f"# Written by `ltrr init` from {catalog} ({roles.rows:,} rows read). Edit freely:",
             "# `ltrr validate` checks every column named here.",
             "version: 1", f"name: {name}", "", "catalog:", f"  path: {_q(catalog)}",
             f"  id: {_q(roles.id)}"]
    if roles.title:
        lines.append(f"  title: {_q(roles.title)}")
    if roles.lists:
        lines.append("  # text columns holding lists: split on read")
        lines.append("  lists: {" + ", ".join(f"{_q(c)}: {_q_sep(s)}" for c, s in
                                              roles.lists.items()) + "}")
    slots = []
    if roles.title:
        slots.append(f"        title: {{column: {_q(roles.title)}, entity: true, min_chars: 3}}")
    for a in roles.attributes:
        slots.append(f"        {_slot_name(a)}: {{column: {_q(a)}, min_count: 2}}")
    arms: list[str] = []
    alloc: dict[str, int] = {}
    if slots:
        lines += ["", "slotters:", "  # finds titles and attribute values in the query, "
                  "typos included", "  - id: understand", "    use: dictionary", "    with:",
                  "      slots:", *slots,
                  "      articles: [the, a, an]   # 'matrix' finds 'The Matrix'"]
    if roles.title:
        arms += ["  # the entities whose title the query names", "  - id: names",
                 "    use: entity_lookup", "    from: [understand]"]
        alloc["names"] = 10
    fields = ([f"{_q(roles.title)}: 3.0"] if roles.title else []) + \
        [f"{_q(c)}: 1.0" for c in roles.descriptions + roles.attributes]
    if not fields:
        raise DataError("no text column to search", hint="the catalog needs a text column "
                        "(a title, a description)")
    arms += ["  # BM25 over the text columns (the title counts three times)", "  - id: lexical",
             "    use: bm25", "    with:", "      fields: {" + ", ".join(fields) + "}"]
    if roles.title:
        arms.append(f"      stemmers: {{{_q(roles.title)}: none}}   # titles keep their "
                    "words: 'animated' is not 'animal'")
    if roles.prior:
        arms.append(f"      prior: {{column: {_q(roles.prior)}, weight: 1.0, transform: "
                    f"{'log1p' if roles.prior_log else 'none'}}}   # popular entities rise")
    alloc["lexical"] = 30
    if roles.title:
        memory = ["  # what users engaged with for a query, learned from `ltrr feedback`; "
                  "cold start from titles", "  - id: memory", "    use: memory",
                  "    max_k: 100", "    with:", f"      name: {{column: {_q(roles.title)}}}"]
        if roles.attributes:
            memory.append("      attributes: [" + ", ".join(
                f"{{column: {_q(a)}}}" for a in roles.attributes) + "]")
        if roles.prior:
            memory.append(f"      popularity: {_q(roles.prior)}")
            if roles.prior_log:
                memory.append("      popularity_log: true")
        arms += memory
        alloc["memory"] = 20
    relations = [f"        - {{kind: bipartite, path: {_q(catalog)}, entity: {_q(roles.id)}, "
                 f"attribute: {_q(a)}, namespace: {_slot_name(a)}"
                 + (f", separator: {_q_sep(roles.lists[a])}" if a in roles.lists else "") + "}"
                 for a in roles.attributes]
    if links is not None:
        value = f", value: {_q(links.value)}" if links.value else ""
        relations.append(f"        - {{kind: co_occurrence, path: {_q(links.path)}, group: "
                         f"{_q(links.user)}, entity: {_q(links.entity)}{value}, top_n: 20}}")
    if relations and slots:
        arms += ["  # related entities: personalised PageRank from what the query names",
                 "  - id: related", "    use: graph", "    from: [understand]", "    with:",
                 "      relations:", *relations]
        if roles.attributes:
            arms.append("      slot_attributes: {" + ", ".join(
                f"{_slot_name(a)}: {_slot_name(a)}" for a in roles.attributes) + "}")
        alloc["related"] = 20
    lines += ["", "arms:", *arms]
    budget = sum(alloc.values())
    lines += ["", "# a fixed split of the candidate budget to start with; once feedback flows,",
              "# a learning policy chooses it per query (see docs/policies.md):",
              "#   use: vw", "#   with: {step: 10, exploration: squarecb}",
              "policy:", "  use: static", f"  budget: {budget}",
              "  with: {allocation: {" + ", ".join(f"{a}: {k}" for a, k in alloc.items())
              + "}}", "", "merge:", "  use: rrf", "", "output:", "  k: 10", ""]
    return "\n".join(lines)


def _q_sep(sep: str) -> str:
    return "'" + sep.replace("'", "''") + "'"


def _slot_name(column: str) -> str:
    name = NAME.sub("_", column).strip("_").lower() or "value"
    return name if name[0].isalpha() else f"c_{name}"
