"""Candidate features of the learned rankers, and the user profiles they learn.

:class:`FeatureBuilder` turns one ranking request — the merged candidates with their
provenance, the query, its slots, the user — into a float matrix, one row per
candidate, with named columns grouped as declared in YAML:

- ``arms``: per arm, found (0/1), reciprocal rank and raw score there; how many arms
  found the candidate;
- ``fused``: the merger's score and reciprocal rank;
- ``popularity``: ``log1p`` of a numeric catalog column;
- ``slots``: the best score of an entity slot naming the candidate; per slot type
  mapped to a catalog column, the share of the query's slots whose value the
  candidate carries (and whether the query has such a slot);
- ``text``: fuzzy similarity (rapidfuzz WRatio) of the query and the candidate's
  title, and exact equality after normalisation;
- ``personal``: from :class:`UserProfiles` — how much this user engaged with the
  candidate before, their affinity with its tags, how much history they have;
- ``types`` (a typed catalog): per entity type, whether the candidate is of it and
  whether the query asks for it (a type-intent slot, or an entity slot naming an
  entity of that type), and whether the candidate's type is one asked for — what a
  learned blend of types is learned from.

Missing values (an arm that did not find the candidate) are 0 with the ``found`` flag
telling them apart, so linear models and trees read the same matrix.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ltrr.components import Params, PlanView, Problem
from ltrr.types import TYPE_SLOT, RankRequest
from ltrr.text import normalize

if TYPE_CHECKING:
    import numpy as np

FeatureGroup = Literal["arms", "fused", "popularity", "slots", "text", "personal", "types"]
ALL_GROUPS: tuple[str, ...] = ("arms", "fused", "popularity", "slots", "text", "personal",
                               "types")


class RankerFeatureParams(Params):
    """Which candidate features a learned ranker sees."""

    features: list[FeatureGroup] | None = Field(None, description=(
        "Feature groups: arms (found, 1/rank, score per arm; arm count), fused (merger score "
        "and 1/rank), popularity, slots (entity and attribute slot matches), text (query-"
        "title similarity), personal (the user's past engagement with the candidate and "
        "its tags), types (a typed catalog: the candidate's type, the types the query asks "
        "for). Default: every group whose catalog columns are set."))
    popularity: str | None = Field(None, description=(
        "Numeric catalog column for the popularity feature (log1p); needed by 'popularity'."))
    title: str | None = Field(None, description=(
        "Catalog column holding the entity's title; needed by 'text'."))
    entity_tags: str | None = Field(None, description=(
        "Catalog list column of the entity's tags: the personal tag affinity uses it."))
    slot_columns: dict[str, str] = Field(default_factory=dict, description=(
        "Slot type → catalog column (list or scalar) a candidate must carry the slot's "
        "value in, e.g. {tag: tags}: one 'slots.<type>' feature each."))

    def groups(self) -> list[str]:
        """The feature groups in use: ``features``, or every group whose columns are set."""
        if self.features is not None:
            return [g for g in ALL_GROUPS if g in self.features]
        return [g for g in ALL_GROUPS if (g != "popularity" or self.popularity)
                and (g != "text" or self.title)]

    def check_features(self, plan: PlanView) -> list[Problem]:
        problems = []
        if self.features is None:
            return problems
        if "popularity" in self.features and not self.popularity:
            problems.append(Problem("the 'popularity' feature group needs a catalog column",
                                    ("popularity",), hint="e.g. popularity: popularity"))
        if "text" in self.features and not self.title:
            problems.append(Problem("the 'text' feature group needs the title column",
                                    ("title",), hint="e.g. title: name"))
        if "types" in self.features and not plan.types:
            problems.append(Problem("the 'types' feature group needs a typed catalog",
                                    ("features",), hint="declare catalog.types, or drop "
                                    "'types' from features"))
        return problems


class UserProfiles:
    """Per user, engagement weight per entity and per tag, learned from feedback."""

    MAX_ENTITIES = 500   # per user, the least engaged are dropped beyond this
    MAX_TAGS = 100

    def __init__(self) -> None:
        self.entities: dict[str, dict[str, float]] = {}
        self.tags: dict[str, dict[str, float]] = {}
        self.total: dict[str, float] = {}

    def update(self, user: str, entity: str, weight: float, tags: list[str] | None) -> None:
        """Count one positive engagement (``weight`` > 0) of ``user`` with ``entity``."""
        ents = self.entities.setdefault(user, {})
        ents[entity] = ents.get(entity, 0.0) + weight
        if len(ents) > self.MAX_ENTITIES:
            self.entities[user] = dict(sorted(ents.items(), key=lambda kv: -kv[1])
                                       [: self.MAX_ENTITIES])
        self.total[user] = self.total.get(user, 0.0) + weight
        if tags:
            tw = self.tags.setdefault(user, {})
            share = weight / len(tags)
            for t in tags:
                tw[t] = tw.get(t, 0.0) + share
            if len(tw) > self.MAX_TAGS:
                self.tags[user] = dict(sorted(tw.items(), key=lambda kv: -kv[1])
                                       [: self.MAX_TAGS])

    def to_json(self) -> dict[str, Any]:
        return {"entities": self.entities, "tags": self.tags, "total": self.total}

    def load(self, obj: dict[str, Any]) -> None:
        self.entities = {u: {e: float(w) for e, w in d.items()}
                         for u, d in obj.get("entities", {}).items()}
        self.tags = {u: {t: float(w) for t, w in d.items()} for u, d in obj.get("tags", {}).items()}
        self.total = {u: float(w) for u, w in obj.get("total", {}).items()}


class FeatureBuilder:
    """Named feature columns of ranking requests (see the module docstring)."""

    def __init__(self, params: RankerFeatureParams, arms: tuple[str, ...], catalog,
                 profiles: UserProfiles, types: tuple[str, ...] = ()):
        self.groups = params.groups()
        self.types = list(types)
        self.arms = list(arms)
        self.params = params
        self.profiles = profiles
        self._catalog = catalog
        names: list[str] = []
        if "arms" in self.groups:
            for a in self.arms:
                names += [f"{a}.found", f"{a}.rrank", f"{a}.score"]
            names.append("arms.count")
        if "fused" in self.groups:
            names += ["fused.score", "fused.rrank"]
        if "popularity" in self.groups:
            names.append("popularity")
        if "slots" in self.groups:
            names.append("slots.entity")
            for s in params.slot_columns:
                names += [f"slots.{s}", f"slots.{s}.asked"]
        if "text" in self.groups:
            names += ["text.sim", "text.exact"]
        if "personal" in self.groups:
            names += ["user.entity", "user.tags", "user.history"]
        if "types" in self.groups and self.types:
            for t in self.types:
                names += [f"type.{t}", f"type.{t}.asked"]
            names.append("type.match")
        self.names = names
        self._index = {n: i for i, n in enumerate(names)}
        self._loaded = False

    # --- catalog lookups, loaded on first use -----------------------------------------

    def _load(self) -> None:
        import numpy as np

        cat = self._catalog
        frame = cat.frame
        p = self.params
        self._row = {e: i for i, e in enumerate(cat.ids)}
        self._pop = None
        if p.popularity:
            self._pop = np.log1p(np.clip(frame[p.popularity].cast(float).fill_null(0.0)
                                         .to_numpy(), 0, None))
        self._titles = [normalize(str(t)) for t in frame[p.title].to_list()] if p.title else None
        self._tags = ([list(v) if v is not None else [] for v in frame[p.entity_tags].to_list()]
                      if p.entity_tags else None)
        self._slot_values: dict[str, list[set[str]]] = {}
        for slot, col in p.slot_columns.items():
            vals = frame[col].to_list()
            self._slot_values[slot] = [
                {normalize(str(x)) for x in v} if isinstance(v, (list, tuple))
                else ({normalize(str(v))} if v is not None else set()) for v in vals]
        self._type_code = None
        if self.types and cat.typed:
            code = {t: i for i, t in enumerate(self.types)}
            type_of = cat.type_of
            self._type_code = [code.get(type_of.get(e), -1) for e in cat.ids]
        self._loaded = True

    def _types_asked(self, slots) -> set[str]:
        """The types a query's slots ask for: a type intent's value, the type of an entity
        named (also for slots read back from the decision log, which keeps no type)."""
        asked = set()
        for s in slots:
            if s.entity_type is not None:
                asked.add(s.entity_type)
            elif s.entity_id is not None:
                row = self._row.get(s.entity_id)
                if row is not None and self._type_code[row] >= 0:
                    asked.add(self.types[self._type_code[row]])
            elif s.name == TYPE_SLOT and s.value in self.types:
                asked.add(s.value)
        return asked

    def tags_of(self, entity: str) -> list[str] | None:
        if not self._loaded:
            self._load()
        if self._tags is None:
            return None
        row = self._row.get(entity)
        return self._tags[row] if row is not None else None

    # --- the matrix ---------------------------------------------------------------------

    def matrix(self, requests: list[RankRequest], depth: int | None = None) -> list[np.ndarray]:
        """One ``(candidates, features)`` float32 matrix per request (the first
        ``depth`` merged candidates when given)."""
        if not self._loaded:
            self._load()
        return [self._one(r, depth) for r in requests]

    def _one(self, r: RankRequest, depth: int | None) -> np.ndarray:
        import numpy as np

        merged = r.merged if depth is None else r.merged[:depth]
        n, ix = len(merged), self._index
        x = np.zeros((n, len(self.names)), dtype=np.float32)
        if n == 0:
            return x
        groups = self.groups
        rows = [self._row.get(m.entity_id) for m in merged]
        if "arms" in groups:
            col = {a: ix[f"{a}.found"] for a in self.arms}
            count = ix["arms.count"]
            for i, m in enumerate(merged):
                seen = 0
                for c in m.sources:
                    j = col.get(c.arm)
                    if j is None or x[i, j]:
                        continue
                    x[i, j] = 1.0
                    x[i, j + 1] = 1.0 / c.rank if c.rank > 0 else 0.0
                    x[i, j + 2] = c.score if math.isfinite(c.score) else 0.0
                    seen += 1
                x[i, count] = seen
        if "fused" in groups:
            j = ix["fused.score"]
            x[:, j] = [m.score for m in merged]
            x[:, j + 1] = 1.0 / np.arange(1, n + 1)
        if "popularity" in groups and self._pop is not None:
            x[:, ix["popularity"]] = [self._pop[k] if k is not None else 0.0 for k in rows]
        if "slots" in groups:
            j = ix["slots.entity"]
            by_entity: dict[str, float] = {}
            for s in r.slots:
                if s.entity_id is not None:
                    by_entity[s.entity_id] = max(by_entity.get(s.entity_id, 0.0), s.score)
            if by_entity:
                x[:, j] = [by_entity.get(m.entity_id, 0.0) for m in merged]
            for slot, values in self._slot_values.items():
                asked = [normalize(s.value) for s in r.slots if s.name == slot]
                if not asked:
                    continue
                js = ix[f"slots.{slot}"]
                x[:, js + 1] = 1.0
                x[:, js] = [sum(v in values[k] for v in asked) / len(asked) if k is not None
                            else 0.0 for k in rows]
        if "text" in groups and self._titles is not None:
            from rapidfuzz import fuzz

            q = normalize(r.query.text)
            j = ix["text.sim"]
            for i, k in enumerate(rows):
                if k is None:
                    continue
                t = self._titles[k]
                x[i, j] = fuzz.WRatio(q, t) / 100.0
                x[i, j + 1] = 1.0 if q == t else 0.0
        if "personal" in groups:
            user = r.query.user_id
            ents = self.profiles.entities.get(user) if user else None
            if ents:
                j = ix["user.entity"]
                x[:, j + 2] = math.log1p(self.profiles.total.get(user, 0.0))
                x[:, j] = [math.log1p(ents.get(m.entity_id, 0.0)) for m in merged]
                tw = self.profiles.tags.get(user)
                if tw and self._tags is not None:
                    total = sum(tw.values()) or 1.0
                    x[:, j + 1] = [sum(tw.get(t, 0.0) for t in self._tags[k]) / total
                                   if k is not None else 0.0 for k in rows]
        if "types" in groups and self._type_code is not None:
            codes = [self._type_code[k] if k is not None else -1 for k in rows]
            asked = self._types_asked(r.slots)
            base = ix[f"type.{self.types[0]}"]
            for t_i, t in enumerate(self.types):
                j = base + 2 * t_i
                x[:, j] = [c == t_i for c in codes]
                if t in asked:
                    x[:, j + 1] = 1.0
            if asked:
                wanted = {self.types.index(t) for t in asked if t in self.types}
                x[:, ix["type.match"]] = [c in wanted for c in codes]
        return x
