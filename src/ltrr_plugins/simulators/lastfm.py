"""``lastfm`` user model for ``ltrr simulate``: Last.fm listeners searching for artists they play.

A session draws a user of ``plays.parquet`` uniformly, a target artist in proportion to
that user's play counts, and a typed query for it from
:class:`~ltrr_plugins.simulators.query_model.QueryModel` (exact, misspelled, partial,
tag, like, vague), the query-type mix following an optional schedule. On the ranked
list the user clicks by position (:mod:`~ltrr_plugins.simulators.clicks`). A ``play`` of
the target always follows: the user found it, here or elsewhere — the "confirmed by their actions" signal the
policy's reward uses (in the candidate set or not).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from ltrr import extras
from ltrr.errors import RunError
from ltrr.hookspecs import hookimpl
from ltrr.simulate import Session
from ltrr_plugins.simulators.clicks import ClickParams, MixPhase, TypedQueryUsers
from ltrr_plugins.simulators.query_model import DEFAULT_MIX, QUERY_TYPES, QueryModel

__all__ = ["LastfmUsers", "LastfmUsersParams", "MixPhase"]


class LastfmUsersParams(ClickParams):
    data: str | None = Field(None, description=(
        "Folder with artists.parquet, plays.parquet and tag_assignments.parquet, relative "
        "to the spec; default: the folder of the pipeline's catalog file (the Last.fm "
        "export keeps them together, as examples/data/lastfm/ does)."))
    mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_MIX), description=(
        "Query type → weight at the start of the run (types: exact, misspelled, partial, "
        "tag, like, vague). A target that cannot carry a drawn type gets another type "
        "of the mix."))
    types: ClassVar[tuple[str, ...]] = QUERY_TYPES


class LastfmUsers(TypedQueryUsers):
    """Last.fm listeners: targets ∝ their plays, typed queries, position-based clicks."""

    name = "lastfm"
    requires = extras.SIMULATE
    Params = LastfmUsersParams
    types = QUERY_TYPES

    def open(self) -> None:
        p = self.params
        folder = self.ctx.resolve(p.data) if p.data else self.ctx.catalog.path.parent
        self.model = QueryModel.from_dir(Path(folder))
        self.model.split(p.split)
        catalog = set(self.ctx.catalog.ids)
        missing = [a for a in self.model.ids if a not in catalog]
        if len(missing) > 0.01 * len(self.model.ids):
            raise RunError(f"{len(missing)} of the {len(self.model.ids)} Last.fm artists are "
                           f"not in the pipeline's catalog (e.g. '{missing[0]}')",
                           field="with.data",
                           hint="simulate a pipeline whose catalog is the Last.fm artists "
                                "(artist_id ids), e.g. pipelines/music.yaml")
        self._absent = set(missing)
        self.set_mix(p.mix, p.schedule)

    def sample(self, rng, progress: float) -> Session:
        mix = self.mix_at(progress)
        for _ in range(100):
            q = self.model.sample(rng, mix=mix)
            if q.target not in self._absent:
                return Session(user_id=q.user_id, target=q.target, text=q.text, type=q.type)
        raise RunError("could not draw a target present in the catalog in 100 tries",
                       field="with.data", hint="check the catalog holds the Last.fm artists")


@hookimpl
def ltrr_user_models():
    return [LastfmUsers]
