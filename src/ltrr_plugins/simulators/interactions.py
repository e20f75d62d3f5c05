"""``interactions`` user model for ``ltrr simulate``: users of any catalog with an
interactions file (user, entity, optional weight) searching for what they engaged with.

A session draws a user uniformly and a target among the entities the user interacted with,
in proportion to the weight (rows under ``min_weight`` left out: "rated 4 or more"). The
query for it is one of six types, all from the catalog's own columns
(:meth:`~ltrr_plugins.simulators.query_model.QueryModel.from_interactions`):

============== =========================================================================
``exact``      the title
``misspelled`` the title with 1–2 keyboard typos
``partial``    a distinctive word span or a prefix of the title
``attribute``  one value of the target's ``attributes`` columns (genre, tag, decade, …)
               that at most ``max_attribute_entities`` entities carry
``like``       "like <X>": X an entity the same users engaged with, sharing an attribute
``vague``      2–3 attribute values together, in a neutral wording ("something a b")
============== =========================================================================

Clicks are position-based (:mod:`~ltrr_plugins.simulators.clicks`); a click on the target
is followed by a ``play``; a user who missed it plays it anyway only with
``play_after_miss`` (default: no — on your data you rarely know).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from ltrr import extras
from ltrr.errors import DataError, RunError
from ltrr.hookspecs import hookimpl
from ltrr.simulate import Session
from ltrr_plugins.simulators.clicks import ClickParams, TypedQueryUsers
from ltrr_plugins.simulators.query_model import (DEFAULT_MIX, LIKE_TEMPLATES, QUERY_TYPES,
                                                 VAGUE_TEMPLATES, QueryModel)

#: This model's names for the query model's types (``tag`` is any attribute here).
TYPES = {t: ("attribute" if t == "tag" else t) for t in QUERY_TYPES}
_INTERNAL = {v: k for k, v in TYPES.items()}


class InteractionsParams(ClickParams):
    path: str = Field(description=(
        "Interactions file (CSV, TSV, JSONL or Parquet), relative to the spec."))
    user: str = Field("user", description="Its column of user ids.")
    entity: str = Field("entity", description="Its column of catalog ids.")
    weight: str | None = Field(None, description=(
        "Its column of weights (plays, a rating, a count); without one each row weighs 1."))
    min_weight: float | None = Field(None, description=(
        "Leave out rows weighing less (e.g. 4 with ratings: targets are what users liked)."))
    title: str | None = Field(None, description=(
        "Catalog column users type names from; default: the spec's catalog.title."))
    attributes: list[str] | None = Field(None, description=(
        "Catalog columns whose values describe an entity (lists or single values), most "
        "telling first; default: the catalog's list columns."))
    mix: dict[str, float] = Field(
        default_factory=lambda: {TYPES[t]: w for t, w in DEFAULT_MIX.items()}, description=(
            "Query type → weight at the start (types: exact, misspelled, partial, "
            "attribute, like, vague). A target that cannot carry a drawn type gets another "
            "type of the mix."))
    max_attribute_entities: int = Field(100, ge=2, description=(
        "An attribute query's value (a vague query's values together) describes at most "
        "this many entities: users name what narrows the catalog down."))
    like_templates: list[str] = Field(default_factory=lambda: list(LIKE_TEMPLATES),
                                      min_length=1, description=(
        "Wordings of a 'like' query, each with {x} (the named entity's title), e.g. "
        "'movies like {x}'."))
    vague_templates: list[str] = Field(default_factory=lambda: list(VAGUE_TEMPLATES),
                                       min_length=1, description=(
        "Wordings of a vague query, each with {t} (the attribute values)."))

    types: ClassVar[tuple[str, ...]] = tuple(TYPES.values())

    @field_validator("like_templates", "vague_templates")
    @classmethod
    def _placeholder(cls, v, info):
        slot = "{x}" if info.field_name == "like_templates" else "{t}"
        bad = [t for t in v if slot not in t]
        if bad:
            raise ValueError(f"{bad[0]!r} has no {slot}")
        return v


class InteractionsUsers(TypedQueryUsers):
    """Users of any catalog: targets from their interactions, typed queries from its columns."""

    name = "interactions"
    requires = extras.SIMULATE
    Params = InteractionsParams
    types = tuple(TYPES.values())

    def open(self) -> None:
        import polars as pl

        from ltrr.tables import read_table

        p = self.params
        catalog = self.ctx.catalog
        frame = catalog.frame
        title = p.title or self.ctx.title
        if title is None:
            raise RunError("no title column to write queries from", field="with.title",
                           hint="set catalog.title in the spec or --with title=<column>")
        attributes = p.attributes
        if attributes is None:
            attributes = [c for c in frame.columns
                          if isinstance(frame[c].dtype, pl.List) and c != title]
        for field, names in (("with.title", [title]), ("with.attributes", attributes)):
            for c in names:
                if c not in frame.columns:
                    raise RunError(f"the catalog has no column '{c}'", field=field,
                                   hint=f"columns: {', '.join(frame.columns)}")
        values = [pl.col(c).cast(pl.List(pl.String)) if isinstance(frame[c].dtype, pl.List)
                  else pl.concat_list(pl.col(c).cast(pl.String)) for c in attributes]
        entities = frame.select(
            pl.Series("id", catalog.ids), pl.col(title).cast(pl.String).alias("name"),
            (pl.concat_list(values).list.drop_nulls() if values
             else pl.lit([], pl.List(pl.String))).alias("tags"))
        path = self.ctx.resolve(p.path)
        try:
            rows = read_table(path, what="interactions file")
        except DataError as e:
            raise RunError(e.message, field="with.path", hint=e.hint) from None
        columns = {"user": p.user, "entity": p.entity, "weight": p.weight}
        for key, c in columns.items():
            if c is not None and c not in rows.columns:
                raise RunError(f"{path.name} has no column '{c}'", field=f"with.{key}",
                               hint=f"its columns: {', '.join(rows.columns)}")
        rows = rows.select(pl.col(p.user).alias("user"), pl.col(p.entity).cast(pl.String)
                           .alias("entity"),
                           (pl.col(p.weight).cast(pl.Float64) if p.weight else pl.lit(1.0))
                           .alias("weight"))
        if p.min_weight is not None:
            rows = rows.filter(pl.col("weight") >= p.min_weight)
        known = set(catalog.ids)
        rows = rows.filter(pl.col("entity").is_in(list(known)) & (pl.col("weight") > 0))
        if rows.is_empty():
            raise RunError(f"no row of {path.name} names a catalog entity with a positive "
                           "weight", field="with.entity",
                           hint="check the entity column holds the catalog's ids and "
                                "min_weight")
        self.model = QueryModel.from_interactions(
            entities, rows, max_tag_artists=p.max_attribute_entities,
            like_templates=tuple(p.like_templates), vague_templates=tuple(p.vague_templates))
        self.model.split(p.split)
        self.set_mix(p.mix, p.schedule)

    def sample(self, rng, progress: float) -> Session:
        mix = {_INTERNAL[t]: w for t, w in self.mix_at(progress).items()}
        q = self.model.sample(rng, mix=mix)
        return Session(user_id=q.user_id, target=q.target, text=q.text, type=TYPES[q.type])


@hookimpl
def ltrr_user_models():
    return [InteractionsUsers]
