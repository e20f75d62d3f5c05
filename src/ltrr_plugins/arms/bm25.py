"""``bm25`` arm: lexical retrieval with Lucene BM25 (Anserini, through pyserini's jar).

Indexes the declared catalog columns as separate Lucene fields (plus a ``contents``
field concatenating them) and searches them with per-field boosts. The query is
analysed into terms — never parsed as Lucene syntax — so user text like
``name:x OR *:*`` is just words.

Structured search (optional, see docs/arms/bm25.md):

* ``prior``: a numeric catalog column stored as Lucene doc values at index time and
  added inside Lucene to every hit's score: ``score = bm25 + weight · f(value)``.
* ``slots``: for each slot the slotters found (``tag = "hip hop"``), a phrase match of
  its value on a field, as a filter (only matching entities) or a boost; the slot's span
  may be removed from the free text. When filters leave fewer than ``k`` hits, the rest
  is filled from the same query with the filters relaxed into boosts (``fill``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from ltrr import extras
from ltrr.components import Arm, ColumnUse, Indexed, Params, PlanView, Problem, TableUse
from ltrr.errors import StateError
from ltrr.tables import column as catalog_column
from ltrr.hookspecs import hookimpl
from ltrr.types import ArmRequest, Candidate

#: Lucene doc-values fields holding the prior (raw value, and ln(1 + value)).
PRIOR_FIELD = "ltrr.prior"
PRIOR_LOG1P_FIELD = "ltrr.prior.log1p"
PRIOR_STATS = "prior.json"
PRIOR_ROWS = "prior.npy"     # the prior column by catalog row (NaN: missing)
_RESERVED = frozenset({"id", "contents", "raw", "entity", PRIOR_FIELD, PRIOR_LOG1P_FIELD})
_FIELD_CHARS = "letters, digits, '_' and '.', starting with a letter or '_'"


class PriorParams(Params):
    column: str = Field(description=(
        "Numeric catalog column (e.g. popularity, plays), stored in the index. Values must "
        "be >= 0; missing values count as 0."))
    weight: float = Field(1.0, ge=0, description=(
        "score = bm25 + weight × transform(value); 0 turns the prior off without re-indexing."))
    transform: Literal["log1p", "linear", "none"] = Field("log1p", description=(
        "log1p: ln(1 + value); linear: value / max(value) over the catalog (in [0, 1]); "
        "none: the raw value. Query-time: changing it needs no re-index."))


class SlotRule(Params):
    field: str = Field(description=(
        "Catalog column the slot value is matched against, as a phrase analysed like the "
        "index (indexed too if not in `fields`; the free text searches it only with "
        "flat: true). With a list column (e.g. tags) a phrase never spans two values."))
    mode: Literal["boost", "filter"] = Field("boost", description=(
        "boost: entities matching the phrase rank higher; filter: only entities matching "
        "it are returned (see `fill`). In both, boost × the phrase's BM25 score is added."))
    boost: float = Field(1.0, ge=0, description=(
        "Weight of the phrase match's BM25 score, times the slot's score. With mode filter "
        "and boost 0 the phrase only filters (a Lucene FILTER clause)."))
    remove_from_text: bool = Field(False, description=(
        "Remove the slot's span from the free-text part of the query (exact slots only: a "
        "fuzzy slot's span may hold other words)."))
    min_score: float = Field(0.0, ge=0, le=1, description=(
        "Ignore slots the slotter scored lower (fuzzy matches score below 1)."))
    yield_to: list[str] = Field(default_factory=list, description=(
        "Slot names that take precedence: ignore this slot when one of them overlaps its "
        "span (e.g. a tag that is also an artist's name: [artist])."))


class Bm25Params(Params):
    fields: dict[str, float] = Field(min_length=1, description=(
        "Catalog columns to index, each with its query-time boost, e.g. {name: 3, tags: 1}. "
        "List columns are indexed value by value."))
    stemmers: dict[str, Literal["porter", "krovetz", "none"]] = Field(
        default_factory=dict, description=(
            "Stemmer of an indexed column (default porter, as Anserini): krovetz is lighter "
            "(\"animated\" no longer matches \"animal\"), none keeps exact words — e.g. "
            "{title: none}. Queries are analysed the same way, field by field."))
    flat: bool = Field(False, description=(
        "Search one 'contents' field (all columns concatenated) instead of the boosted "
        "fields — Anserini's BEIR 'flat' setting."))
    k1: float = Field(0.9, gt=0, description="BM25 term-frequency saturation.")
    b: float = Field(0.4, ge=0, le=1, description="BM25 length normalisation.")
    threads: int = Field(1, ge=1, description="Lucene search threads for a batch.")
    prior: PriorParams | None = Field(None, description=(
        "A popularity/quality prior added to the BM25 score inside Lucene "
        "({column, weight, transform})."))
    slots: dict[str, SlotRule] = Field(default_factory=dict, description=(
        "Slot name (as the slotters emit it) → how its values constrain the search "
        "({field, mode, boost, remove_from_text, min_score, yield_to})."))
    fill: bool = Field(True, description=(
        "When slot filters leave fewer than k hits, fill the rest from the same query with "
        "the filters relaxed into boosts (ranked after, features.relaxed = 1)."))


class Bm25Arm(Arm, Indexed):
    """Lucene BM25 over catalog fields with per-field boosts, popularity prior and slot filters."""

    name = "bm25"
    requires = extras.LUCENE
    reads_user = False
    Params = Bm25Params

    @classmethod
    def check(cls, params: Bm25Params, plan: PlanView) -> list[Problem]:
        problems = []
        named = [(("fields", f), f) for f in params.fields]
        named += [(("slots", s, "field"), r.field) for s, r in params.slots.items()]
        for path, name in named:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name):
                problems.append(Problem(f"column {name!r} cannot be a Lucene field name", path,
                                        hint=f"use a column named with {_FIELD_CHARS}"))
            elif name in _RESERVED:
                problems.append(Problem(f"column name {name!r} is reserved by the index", path,
                                        hint="rename the column in the catalog"))
        indexed = set(params.fields) | {r.field for r in params.slots.values()}
        for name in params.stemmers:
            if name not in indexed:
                problems.append(Problem(
                    f"stemmer for {name!r}, which is not indexed", ("stemmers", name),
                    hint=f"indexed columns: {', '.join(sorted(indexed))}"))
        return problems

    @classmethod
    def tables(cls, params: Bm25Params) -> list[TableUse]:
        columns = [ColumnUse(f, ("fields", f), "text", key=True) for f in params.fields]
        columns += [ColumnUse(r.field, ("slots", s, "field"), "text")
                    for s, r in params.slots.items() if r.field not in params.fields]
        if params.prior is not None:
            columns.append(ColumnUse(params.prior.column, ("prior", "column"), "number"))
        return [TableUse(tuple(columns))]

    # -- indexing

    def _columns(self) -> list[str]:
        """Indexed text columns: the searched fields, then slot-only fields."""
        columns = list(self.params.fields)
        for rule in self.params.slots.values():
            if rule.field not in columns:
                columns.append(rule.field)
        return columns

    def _docs(self, columns: list[str], prior: list[float | None] | None = None):
        frame = self.ctx.catalog.frame
        slots = {r.field: s for s, r in self.params.slots.items()}
        for c in columns:
            catalog_column(frame, c, node=self.ctx.node_id, field=f"with.fields.{c}"
                           if c in self.params.fields else f"with.slots.{slots.get(c)}.field")
        ids = self.ctx.catalog.ids
        values = [frame[c].to_list() for c in columns]
        for i, entity in enumerate(ids):
            doc: dict[str, Any] = {"id": entity}
            for c, col in zip(columns, values):
                v = col[i]
                # lists stay lists: the indexer keeps their values apart (a phrase gap)
                doc[c] = ([str(x) for x in v if x is not None] if isinstance(v, list)
                          else "" if v is None else str(v))
            if prior is not None and prior[i] is not None:
                doc[PRIOR_FIELD] = prior[i]
                doc[PRIOR_LOG1P_FIELD] = math.log1p(prior[i])
            yield doc

    def _prior_values(self) -> list[float | None]:
        """The prior column as floats (None = missing), checked: numeric, finite, >= 0."""
        import polars as pl

        column = self.params.prior.column
        frame = self.ctx.catalog.frame
        where = dict(node=self.ctx.node_id, field="with.prior.column")
        series = catalog_column(frame, column, **where)
        if not series.dtype.is_numeric():
            numeric = [c for c in frame.columns if frame[c].dtype.is_numeric()]
            raise StateError(f"prior column '{column}' is {series.dtype}, not numeric", **where,
                             hint=f"numeric columns: {', '.join(numeric) or 'none'}")
        values = [None if v is None or math.isnan(v) else v
                  for v in series.cast(pl.Float64).to_list()]
        bad = next((v for v in values if v is not None and (v < 0 or math.isinf(v))), None)
        if bad is not None:
            raise StateError(f"prior column '{column}' has a value {bad}; priors must be "
                             "finite and >= 0", **where,
                             hint="shift or clip the column when building the catalog")
        return values

    def state_key(self) -> dict[str, Any]:
        # boosts, k1, b, flat, threads, slot modes and the prior's weight and transform
        # are query-time settings: only what is indexed matters
        key: dict[str, Any] = {"fields": sorted(self._columns())}
        if self.params.slots:
            key["value_gap"] = 1       # list values indexed apart (phrases need it)
        if self.params.prior is not None:
            key["prior"] = self.params.prior.column
        stemmers = {f: s for f, s in sorted(self.params.stemmers.items()) if s != "porter"}
        if stemmers:
            key["stemmers"] = stemmers
        return key

    def build(self, out_dir: Path, progress: Callable[[int, int], None]) -> dict[str, Any]:
        from ltrr_plugins.arms import lucene

        columns = self._columns()
        total = len(self.ctx.catalog)
        prior = self._prior_values() if self.params.prior is not None else None
        try:
            n = lucene.build_index(
                self._docs(columns, prior), out_dir / "lucene", columns,
                progress=lambda done: progress(done, total),
                doc_values=[PRIOR_FIELD, PRIOR_LOG1P_FIELD] if prior is not None else (),
                stemmers=self.params.stemmers)
        except ValueError as e:
            raise StateError(f"cannot index: {e}", node=self.ctx.node_id,
                             hint="check the columns named in with.fields / with.slots") from e
        stats: dict[str, Any] = {"documents": n}
        if prior is not None:
            present = [v for v in prior if v is not None]
            info = {"column": self.params.prior.column, "max": max(present, default=0.0),
                    "min": min(present, default=0.0), "missing": len(prior) - len(present)}
            (out_dir / PRIOR_STATS).write_text(json.dumps(info))
            import numpy as np

            np.save(out_dir / PRIOR_ROWS, np.asarray([np.nan if v is None else v for v in prior],
                                                    dtype=np.float64))
            stats["prior_max"] = info["max"]
            stats["prior_missing"] = info["missing"]
        return stats

    # -- searching

    def open(self) -> None:
        from ltrr_plugins.arms import lucene

        self._lucene = lucene
        self._searcher = lucene.FieldedSearcher(self.ctx.state_dir / "lucene",
                                               k1=self.params.k1, b=self.params.b)
        self._fields = None if self.params.flat else dict(self.params.fields)
        self._rules = dict(self.params.slots)
        for name, rule in self._rules.items():
            if rule.field not in self._searcher.fields:
                raise StateError(f"slot field '{rule.field}' is not in the index",
                                 node=self.ctx.node_id, field=f"with.slots.{name}.field",
                                 hint="run `ltrr index` for this spec")
        self._prior = None
        self._prior_of: dict[str, float] = {}
        if self.params.prior is not None:
            self._open_prior()
        self._structured = bool(self._rules) or self._prior is not None

    def warm(self, rows: int = 8) -> None:
        """Search a few catalog rows through the arm's whole path — the first field as
        text, with and without the slot fields' values as slots — so that the JVM loads
        and compiles it before the first timed query (issue 10: a cold first query cost
        100-200 ms, and missed a 200 ms deadline under load)."""
        from ltrr.types import Query, Slot

        text_col = next(iter(self.params.fields))
        have = self.ctx.catalog.columns
        slot_cols = {name: r.field for name, r in self._rules.items() if r.field in have}
        if text_col not in have:
            return
        try:
            picked = self.ctx.catalog.head(list(dict.fromkeys([text_col, *slot_cols.values()])),
                                           rows)
        except Exception:       # warming up must not fail a pipeline that opened
            return
        requests = []
        for i, row in enumerate(picked.iter_rows(named=True)):
            text = _first(row[text_col])
            slots = [Slot(name, value, 0, len(text), 1.0)
                     for name, col in slot_cols.items() if (value := _first(row[col]))]
            k = self.ctx.plan.budget             # what a query may ask for
            requests += [ArmRequest(Query(f"warm-{i}", text), k),
                         ArmRequest(Query(f"warm-{i}-slots", text), k, slots)]
        self.retrieve_batch(requests)

    def _open_prior(self) -> None:
        p = self.params.prior
        where = dict(node=self.ctx.node_id, field="with.prior")
        try:
            info = json.loads((self.ctx.state_dir / PRIOR_STATS).read_text())
        except (OSError, ValueError) as e:
            raise StateError(f"the index has no readable prior ({e})", **where,
                             hint="run `ltrr index --force` for this spec") from e
        if {PRIOR_FIELD, PRIOR_LOG1P_FIELD} - self._searcher.doc_values:
            raise StateError("the index has no prior doc values", **where,
                             hint="run `ltrr index --force` for this spec")
        top = float(info.get("max") or 0.0)
        if p.transform == "log1p":
            field, scale, f = PRIOR_LOG1P_FIELD, 1.0, math.log1p
        elif p.transform == "linear" and top > 0:
            field, scale, f = PRIOR_FIELD, 1.0 / top, (lambda x: x / top)
        else:
            field, scale, f = PRIOR_FIELD, 1.0, (lambda x: x)
        self._prior = self._lucene.Prior(field, p.weight * scale)
        self._prior_weight = p.weight
        self._prior_f, self._prior_rows = f, None
        rows = self.ctx.state_dir / PRIOR_ROWS
        if rows.is_file() and self.ctx.catalog.map is not None:
            from ltrr.mapped import map_array

            self._prior_rows = map_array(rows)     # by catalog row, mapped: no dict of ids
        else:
            values = self._prior_values()
            self._prior_of = {e: f(v) for e, v in zip(self.ctx.catalog.ids, values)
                              if v is not None}

    def _prior_value(self, entity_id: str) -> float:
        """The transformed prior of an entity (0 when it has none)."""
        if self._prior_rows is None:
            return self._prior_of.get(entity_id, 0.0)
        row = self.ctx.catalog.row_of(entity_id)
        if row is None:
            return 0.0
        v = float(self._prior_rows[row])
        return 0.0 if math.isnan(v) else self._prior_f(v)

    def close(self) -> None:
        searcher = getattr(self, "_searcher", None)
        if searcher is not None:
            searcher.close()

    def retrieve_batch(self, requests: list[ArmRequest]) -> list[list[Candidate]]:
        if self._structured:
            return self._lucene.map_threads(self._retrieve_one, requests, self.params.threads)
        k = max(r.k for r in requests)
        hits = self._searcher.search_batch([r.query.text for r in requests], k,
                                           fields=self._fields, threads=self.params.threads)
        arm = self.ctx.node_id
        return [[Candidate(doc, arm, rank, score)
                 for rank, (doc, score) in enumerate(found[:r.k], 1)]
                for r, found in zip(requests, hits)]

    def _groups(self, request: ArmRequest) -> list[tuple[SlotRule, tuple[str, ...], float,
                                                         int, int]]:
        """The request's usable slots grouped by (name, span): (rule, values, score, span)."""
        groups: dict[tuple[str, int, int], list] = {}
        for s in request.slots:
            rule = self._rules.get(s.name)
            if rule is None or s.score < rule.min_score or not s.value or s.value.isspace():
                continue
            if rule.yield_to and any(o.name in rule.yield_to and o.start < s.end
                                     and s.start < o.end for o in request.slots):
                continue
            g = groups.setdefault((s.name, s.start, s.end), [rule, {}, 0.0])
            g[1][s.value] = None
            g[2] = max(g[2], s.score)
        out, seen = [], set()
        for (name, start, end), (rule, values, score) in groups.items():
            key = (name, tuple(values))
            if key not in seen:
                seen.add(key)
                out.append((rule, key[1], score, start, end))
        return out

    def _retrieve_one(self, request: ArmRequest) -> list[Candidate]:
        lucene, searcher, k = self._lucene, self._searcher, request.k
        groups = self._groups(request)
        text = request.query.text
        # a fuzzy slot's span may hold words its value lacks ("90s female vocalists" →
        # "female vocalists"): only exact slots (score 1) give their span up
        spans = [(a, b) for rule, _, score, a, b in groups
                 if rule.remove_from_text and score >= 1.0 and 0 <= a < b <= len(text)]
        if spans:
            chars = list(text)
            for a, b in spans:
                chars[a:b] = " " * (b - a)
            text = "".join(chars)
        phrases = []
        for rule, values, score, _, _ in groups:
            boost = rule.boost * score
            occur = "should" if rule.mode == "boost" else "must" if boost > 0 else "filter"
            phrases.append(lucene.Phrase(rule.field, values, occur, boost))
        hits = searcher.search_structured(text, k, self._fields, phrases=phrases,
                                          prior=self._prior)
        scores = [h.score for h in hits]
        relaxed_from = len(hits)
        if self.params.fill and len(hits) < k and any(p.occur != "should" for p in phrases):
            relaxed = [p._replace(occur="should") for p in phrases]
            more = searcher.search_structured(text, k + len(hits), self._fields,
                                              phrases=relaxed, prior=self._prior)
            seen = {h.doc for h in hits}
            extra = [h for h in more if h.doc not in seen][:k - len(hits)]
            if hits and extra and extra[0].score >= scores[-1]:
                # keep scores non-increasing in rank: move the relaxed tier just below
                top, first = math.nextafter(scores[-1], -math.inf), extra[0].score
                scores += [top - (first - h.score) for h in extra]
            else:
                scores += [h.score for h in extra]
            hits += extra
        arm = self.ctx.node_id
        if self._prior is not None:
            weight = self._prior_weight
            features = []
            for docid, raw, _ in hits:
                prior = self._prior_value(docid)
                lexical = raw - weight * prior
                # float32 rounding of the sum leaves ~1e-8 where there is no lexical score
                features.append({"bm25": lexical if lexical > 1e-6 * (raw if raw > 1.0 else 1.0)
                                 else 0.0, "prior": prior})
        else:
            features = [{"bm25": raw} for _, raw, _ in hits]
        if self._rules:
            bitmaps = [searcher.phrase_docs(p.field, p.texts).bitmap for p in phrases]
            for i, (f, (_, _, doc)) in enumerate(zip(features, hits)):
                byte, bit = doc >> 3, doc & 7
                f["slot_matches"] = float(sum([b[byte] >> bit & 1 for b in bitmaps]))
                f["relaxed"] = 1.0 if i >= relaxed_from else 0.0
        return [Candidate(h[0], arm, rank, score, f)
                for rank, (h, score, f) in enumerate(zip(hits, scores, features), 1)]


def _first(value) -> str:
    """A catalog cell as text: a list's first value, '' for none."""
    if isinstance(value, list):
        value = next((v for v in value if v is not None), None)
    return "" if value is None else str(value)


@hookimpl
def ltrr_components():
    return [Bm25Arm]
