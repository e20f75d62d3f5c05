"""What simulated users share, whatever the catalog: a query-type mix (that may shift over
the run) and a position-based click model.

On the ranked list, rank *r* is examined with probability ``examination[r-1]`` (default
``1 / r**eta``); the target is clicked when examined; other examined results are skipped.
A click on the target is followed by a ``play`` (the user confirms it); a user who missed
the target plays it anyway — found elsewhere — only with ``play_after_miss`` (default
off: a search that failed is silent, as it mostly is in real logs, and a policy learns
from that silence only through the spec's ``feedback.attribution_window``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from ltrr.components import Params
from ltrr.simulate import Engagement, Session, UserModel


def check_mix(mix: dict[str, float], types: tuple[str, ...]) -> dict[str, float]:
    """``mix`` if its types are among ``types`` with weights >= 0, one of them positive."""
    for t, w in mix.items():
        if t not in types:
            raise ValueError(f"unknown query type '{t}' (types: {', '.join(types)})")
        if w < 0:
            raise ValueError(f"weight of '{t}' must be >= 0, got {w}")
    if sum(mix.values()) <= 0:
        raise ValueError("the mix needs a positive weight")
    return mix


class MixPhase(Params):
    at: float = Field(ge=0.0, lt=1.0, description=(
        "Fraction of the run's sessions from which this mix applies (0.5: the second half)."))
    mix: dict[str, float] = Field(description="Query type → weight from then on.")


class ClickParams(Params):
    """Options every typed-query user model takes. A subclass declares ``mix`` (a dict of
    query type → weight) and sets ``types``: the mix and the schedule's are checked
    against them."""

    types: ClassVar[tuple[str, ...]] = ()

    schedule: list[MixPhase] = Field(default_factory=list, description=(
        "Shifts of the mix over the run: [{at: 0.5, mix: {...}}] switches to that mix for "
        "the second half."))
    eta: float = Field(1.0, ge=0.0, description=(
        "Position bias: rank r is examined with probability 1 / r**eta (0: every shown "
        "result is examined)."))
    examination: list[float] | None = Field(None, description=(
        "Examination probability per rank (1-based order), overriding eta; ranks past "
        "the list are never examined."))
    skips: bool = Field(True, description=(
        "Emit a skip event for each examined result that is not the target."))
    split: Literal["all", "tuning", "held-out"] = Field("all", description=(
        "Which half of the users and of the like/vague wordings sessions come from (by a "
        "stable hash): tune features and settings on `tuning`, report on `held-out`."))
    play_after_miss: bool = Field(False, description=(
        "A user who did not click the target still plays it (found it elsewhere), which "
        "tells the policy of the miss without an attribution window. Off by default: "
        "real users who missed mostly leave no trace."))

    @field_validator("examination")
    @classmethod
    def _probabilities(cls, v):
        if v is not None and any(not 0.0 <= p <= 1.0 for p in v):
            raise ValueError("examination probabilities must be in [0, 1]")
        return v

    @field_validator("mix", check_fields=False)
    @classmethod
    def _mix(cls, v):
        return check_mix(v, cls.types)

    @field_validator("schedule")
    @classmethod
    def _ordered(cls, v):
        for phase in v:
            check_mix(phase.mix, cls.types)
        ats = [p.at for p in v]
        if ats != sorted(ats) or len(set(ats)) != len(ats):
            raise ValueError("schedule phases must have increasing 'at'")
        return v


class TypedQueryUsers(UserModel):
    """Base of user models that write typed queries and click by position.

    Subclasses set :attr:`types` (every query type, in report order), call
    :meth:`set_mix` from ``open`` and implement ``sample``."""

    event_types = ("click", "play", "skip")
    types: tuple[str, ...] = ()

    def set_mix(self, mix: dict[str, float], schedule: list[MixPhase]) -> None:
        """The mix at the start, then each phase's (checked by :class:`ClickParams`)."""
        self._phases = [(0.0, dict(mix))] + [(ph.at, dict(ph.mix)) for ph in schedule]

    def query_types(self) -> tuple[str, ...]:
        used = {t for _, mix in self._phases for t, w in mix.items() if w > 0}
        return tuple(t for t in self.types if t in used)

    def mix_changes(self) -> list[float]:
        return [at for at, _ in self._phases[1:]]

    def mix_at(self, progress: float) -> dict[str, float]:
        """The query-type mix in force at ``progress`` (fraction of the run)."""
        current = self._phases[0][1]
        for at, mix in self._phases:
            if at <= progress:
                current = mix
        return current

    def examine(self, rank: int) -> float:
        """Probability that the user looks at rank ``rank`` (1-based)."""
        ex = self.params.examination
        if ex is not None:
            return ex[rank - 1] if rank <= len(ex) else 0.0
        return rank ** -self.params.eta

    def engage(self, session: Session, ranking: list[str], rng) -> list[Engagement]:
        events: list[Engagement] = []
        shown_at = None
        clicked = False
        draws = rng.random(len(ranking))     # one draw per rank: same results, same draws
        for r, (entity, u) in enumerate(zip(ranking, draws), 1):
            if entity == session.target:
                shown_at = r
            if u >= self.examine(r):
                continue
            if entity == session.target:
                events.append(Engagement("click", entity, r, delay_s=2.0 + r))
                clicked = True
            elif self.params.skips:
                events.append(Engagement("skip", entity, r, delay_s=1.0 + r))
        if clicked or self.params.play_after_miss:
            events.append(Engagement("play", session.target, shown_at, delay_s=30.0))
        return events
