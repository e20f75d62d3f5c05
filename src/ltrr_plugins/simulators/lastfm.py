"""``lastfm`` user model for ``ltrr simulate``: Last.fm listeners searching for artists they play.

A session draws a user of ``plays.parquet`` uniformly, a target artist in proportion to
that user's play counts, and a typed query for it from
:class:`~ltrr_plugins.simulators.query_model.QueryModel` (exact, misspelled, partial,
tag, like, vague), the query-type mix following an optional schedule. On the ranked
list the user clicks by position (:mod:`~ltrr_plugins.simulators.clicks`). A ``play`` of
the target always follows: the user found it, here or elsewhere — the "confirmed by their actions" signal the
policy's reward uses (in the candidate set or not).

On a catalog with entity types (``catalog.types``, e.g. ``music_mixed.parquet``), the
query type ``station`` (weight 0 by default) makes a listener look for a *station*: a
target artist is drawn as above, then one of its descriptive tags that has a station
(an entity of type ``station_type`` whose first tag it is), worded by a station template
("{t} radio", "play {t}", ...; split in halves like the like/vague wordings).
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
from ltrr_plugins.simulators.query_model import (
    DEFAULT_MIX,
    QUERY_TYPES,
    QueryModel,
    draw,
    half,
)

#: Wordings of a station query (``{t}``: the tag).
STATION_TEMPLATES = ("{t}", "{t} radio", "{t} station", "play {t}", "{t} music",
                     "{t} mix", "listen to {t}", "{t} playlist", "{t} channel", "stream {t}")
TYPES = QUERY_TYPES + ("station",)

__all__ = ["LastfmUsers", "LastfmUsersParams", "MixPhase"]


class LastfmUsersParams(ClickParams):
    data: str | None = Field(None, description=(
        "Folder with artists.parquet, plays.parquet and tag_assignments.parquet, relative "
        "to the spec; default: the folder of the pipeline's catalog file (the Last.fm "
        "export keeps them together, as examples/data/lastfm/ does)."))
    mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_MIX), description=(
        "Query type → weight at the start of the run (types: exact, misspelled, partial, "
        "tag, like, vague, station). A target that cannot carry a drawn type gets another "
        "type of the mix. station: the user wants a station of a tag (needs a typed "
        "catalog with stations, e.g. examples/data/lastfm/music_mixed.parquet)."))
    station_type: str = Field("station", min_length=1, description=(
        "The entity type of stations in a typed catalog (its first tag is the station's)."))
    types: ClassVar[tuple[str, ...]] = TYPES


class LastfmUsers(TypedQueryUsers):
    """Last.fm listeners: targets ∝ their plays, typed queries, position-based clicks."""

    name = "lastfm"
    requires = extras.SIMULATE
    Params = LastfmUsersParams
    types = TYPES

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
        self._stations: dict[str, str] = {}
        if "station" in self.query_types():
            self._stations = self._station_of_tag()
            held = p.split == "held-out"
            self._station_templates = (STATION_TEMPLATES if p.split == "all"
                                       else half(STATION_TEMPLATES, held))

    def _station_of_tag(self) -> dict[str, str]:
        """Tag → the id of the station entity whose first tag it is."""
        catalog, kind = self.ctx.catalog, self.params.station_type
        if not catalog.typed or kind not in catalog.types:
            raise RunError("the query type 'station' needs a catalog with entity type "
                           f"'{kind}'", field="with.mix.station",
                           hint="simulate a spec whose catalog.types declare stations (e.g. "
                                "pipelines/music-mixed.yaml), or drop station from the mix")
        if "tags" not in catalog.frame.columns:
            raise RunError("the catalog has no 'tags' column to find stations' tags",
                           field="with.mix.station", hint="stations need a tags list column")
        rows = catalog.frame.filter(catalog.frame[catalog.type_column] == kind)
        out: dict[str, str] = {}
        for entity, tags in zip(rows[catalog.id_column].to_list(), rows["tags"].to_list()):
            if tags:
                out.setdefault(str(tags[0]), str(entity))
        if not out:
            raise RunError(f"no '{kind}' entity has a tag", field="with.mix.station",
                           hint="stations need a tags list column, their own tag first")
        return out

    def sample(self, rng, progress: float) -> Session:
        mix = self.mix_at(progress)
        station = mix.get("station", 0.0)
        if station > 0:          # draw only then: runs without stations keep their stream
            if rng.random() < station / sum(mix.values()):
                return self._station_session(rng)
            mix = {t: w for t, w in mix.items() if t != "station"}
        for _ in range(100):
            q = self.model.sample(rng, mix=mix)
            if q.target not in self._absent:
                return Session(user_id=q.user_id, target=q.target, text=q.text, type=q.type)
        raise RunError("could not draw a target present in the catalog in 100 tries",
                       field="with.data", hint="check the catalog holds the Last.fm artists")

    def _station_session(self, rng) -> Session:
        """A listener wanting the station of a tag of an artist they play."""
        m = self.model
        for _ in range(100):
            user = m.sample_user(rng)
            tags = [t for t in m.descriptive_tags(m.sample_target(user, rng))
                    if t in self._stations]
            if not tags:
                continue
            weights = [1.0 / (r + 1) for r in range(len(tags))]   # strongest tags first
            tag = tags[draw(rng, weights)]
            templates = self._station_templates
            text = templates[int(rng.integers(len(templates)))].format(t=tag)
            return Session(user_id=user, target=self._stations[tag], text=text, type="station")
        raise RunError("no listener drawn in 100 tries plays an artist with a station's tag",
                       field="with.mix.station", hint="lower the stations' min artists")


@hookimpl
def ltrr_user_models():
    return [LastfmUsers]
