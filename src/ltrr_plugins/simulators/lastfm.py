"""``lastfm`` user model for ``ltrr simulate``: Last.fm listeners searching for artists they play.

A session draws a user of ``plays.parquet`` uniformly, a target artist in proportion to
that user's play counts, and a typed query for it from
:class:`~ltrr_plugins.simulators.query_model.QueryModel` (exact, misspelled, partial,
tag, like, vague), the query-type mix following an optional schedule. On the ranked
list the user behaves by a position-based click model: rank *r* is examined with
probability ``examination[r-1]`` (default ``1 / r**eta``); the target is clicked when
examined; examined other results are skipped. A ``play`` of the target always follows:
the user found it, here or elsewhere — the "confirmed by their actions" signal the
policy's reward uses (in the candidate set or not).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from ltrr import extras
from ltrr.components import Params
from ltrr.errors import RunError
from ltrr.hookspecs import hookimpl
from ltrr.simulate import Engagement, Session, UserModel
from ltrr_plugins.simulators.query_model import DEFAULT_MIX, QUERY_TYPES, QueryModel


def _check_mix(mix: dict[str, float]) -> dict[str, float]:
    for t, w in mix.items():
        if t not in QUERY_TYPES:
            raise ValueError(f"unknown query type '{t}' (types: {', '.join(QUERY_TYPES)})")
        if w < 0:
            raise ValueError(f"weight of '{t}' must be >= 0, got {w}")
    if sum(mix.values()) <= 0:
        raise ValueError("the mix needs a positive weight")
    return mix


class MixPhase(Params):
    at: float = Field(ge=0.0, lt=1.0, description=(
        "Fraction of the run's sessions from which this mix applies (0.5: the second half)."))
    mix: dict[str, float] = Field(description="Query type → weight from then on.")

    @field_validator("mix")
    @classmethod
    def _mix(cls, v):
        return _check_mix(v)


class LastfmUsersParams(Params):
    data: str | None = Field(None, description=(
        "Folder with artists.parquet, plays.parquet and tag_assignments.parquet, relative "
        "to the spec; default: the folder of the pipeline's catalog file (the Last.fm "
        "export keeps them together, as examples/data/lastfm/ does)."))
    mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_MIX), description=(
        "Query type → weight at the start of the run (types: exact, misspelled, partial, "
        "tag, like, vague). A target that cannot carry a drawn type gets another type "
        "of the mix."))
    schedule: list[MixPhase] = Field(default_factory=list, description=(
        "Shifts of the mix over the run: [{at: 0.5, mix: {tag: 1, vague: 1}}] switches "
        "to that mix for the second half."))
    eta: float = Field(1.0, ge=0.0, description=(
        "Position bias: rank r is examined with probability 1 / r**eta (0: every shown "
        "result is examined)."))
    examination: list[float] | None = Field(None, description=(
        "Examination probability per rank (1-based order), overriding eta; ranks past "
        "the list are never examined."))
    skips: bool = Field(True, description=(
        "Emit a skip event for each examined result that is not the target."))

    @field_validator("mix")
    @classmethod
    def _mix(cls, v):
        return _check_mix(v)

    @field_validator("examination")
    @classmethod
    def _probabilities(cls, v):
        if v is not None and any(not 0.0 <= p <= 1.0 for p in v):
            raise ValueError("examination probabilities must be in [0, 1]")
        return v

    @field_validator("schedule")
    @classmethod
    def _ordered(cls, v):
        ats = [p.at for p in v]
        if ats != sorted(ats) or len(set(ats)) != len(ats):
            raise ValueError("schedule phases must have increasing 'at'")
        return v


class LastfmUsers(UserModel):
    """Last.fm listeners: targets ∝ their plays, typed queries, position-based clicks."""

    name = "lastfm"
    requires = extras.SIMULATE
    Params = LastfmUsersParams
    event_types = ("click", "play", "skip")

    def open(self) -> None:
        p = self.params
        folder = self.ctx.resolve(p.data) if p.data else self.ctx.catalog.path.parent
        self.model = QueryModel.from_dir(Path(folder))
        catalog = set(self.ctx.catalog.ids)
        missing = [a for a in self.model.ids if a not in catalog]
        if len(missing) > 0.01 * len(self.model.ids):
            raise RunError(f"{len(missing)} of the {len(self.model.ids)} Last.fm artists are "
                           f"not in the pipeline's catalog (e.g. '{missing[0]}')",
                           field="with.data",
                           hint="simulate a pipeline whose catalog is the Last.fm artists "
                                "(artist_id ids), e.g. pipelines/music.yaml")
        self._absent = set(missing)
        self._phases = [(0.0, dict(p.mix))] + [(ph.at, dict(ph.mix)) for ph in p.schedule]

    def query_types(self) -> tuple[str, ...]:
        used = {t for _, mix in self._phases for t, w in mix.items() if w > 0}
        return tuple(t for t in QUERY_TYPES if t in used)

    def mix_changes(self) -> list[float]:
        return [at for at, _ in self._phases[1:]]

    def mix_at(self, progress: float) -> dict[str, float]:
        """The query-type mix in force at ``progress`` (fraction of the run)."""
        current = self._phases[0][1]
        for at, mix in self._phases:
            if at <= progress:
                current = mix
        return current

    def sample(self, rng, progress: float) -> Session:
        mix = self.mix_at(progress)
        for _ in range(100):
            q = self.model.sample(rng, mix=mix)
            if q.target not in self._absent:
                return Session(user_id=q.user_id, target=q.target, text=q.text, type=q.type)
        raise RunError("could not draw a target present in the catalog in 100 tries",
                       field="with.data", hint="check the catalog holds the Last.fm artists")

    def examine(self, rank: int) -> float:
        """Probability that the user looks at rank ``rank`` (1-based)."""
        ex = self.params.examination
        if ex is not None:
            return ex[rank - 1] if rank <= len(ex) else 0.0
        return rank ** -self.params.eta

    def engage(self, session: Session, ranking: list[str], rng) -> list[Engagement]:
        events: list[Engagement] = []
        shown_at = None
        draws = rng.random(len(ranking))     # one draw per rank: same results, same draws
        for r, (entity, u) in enumerate(zip(ranking, draws), 1):
            if entity == session.target:
                shown_at = r
            if u >= self.examine(r):
                continue
            if entity == session.target:
                events.append(Engagement("click", entity, r, delay_s=2.0 + r))
            elif self.params.skips:
                events.append(Engagement("skip", entity, r, delay_s=1.0 + r))
        events.append(Engagement("play", session.target, shown_at, delay_s=30.0))
        return events


@hookimpl
def ltrr_user_models():
    return [LastfmUsers]
