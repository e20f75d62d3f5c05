"""The contract between ``ltrr simulate`` and a simulated-user plugin.

A user model is a class registered through the ``ltrr_user_models`` hook. For each
session the engine asks it for a :class:`Session` (who searches, for which target
entity, with which query text and query type), serves the query through the
pipeline, then hands it the final ranking and gets back the user's
:class:`Engagement` events (clicks, plays, skips ...), which are ingested as feedback
exactly like production events.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

from ltrr.components import Pluggable

if TYPE_CHECKING:
    import numpy as np

    from ltrr.catalog import Catalog


@dataclass(frozen=True, slots=True)
class Session:
    """One simulated search: the user, the entity they want, their query and its type.

    ``type`` is the simulator's ground truth (``exact``, ``tag``, ...), used for
    per-type accounting and the per-type oracle; it is never shown to the pipeline.
    """

    user_id: str
    target: str
    text: str
    type: str


@dataclass(frozen=True, slots=True)
class Engagement:
    """One thing the user did after seeing the ranking (becomes a feedback event)."""

    type: str                      # an event type of the spec's feedback.weights
    entity_id: str
    position: int | None = None    # 1-based rank at which it was shown, if it was
    delay_s: float = 0.0           # seconds after the query


@dataclass
class UserModelContext:
    """What a user model may use: the spec's folder (to resolve paths), the catalog and
    its title column (None if the spec names none)."""

    spec_dir: Path
    catalog_loader: Callable[[], "Catalog"]
    title: str | None = None

    @property
    def catalog(self) -> "Catalog":
        return self.catalog_loader()

    def resolve(self, path: str | Path) -> Path:
        """A path from the params, resolved against the spec's folder."""
        from ltrr.spec import resolve_path

        return resolve_path(self.spec_dir, path)


class UserModel(Pluggable):
    """Base of simulated users: sample sessions, react to rankings.

    Subclasses set ``name`` (what ``ltrr simulate --user-model`` names), ``Params``
    (a pydantic model of the ``--with key=value`` options, fields with
    ``description=``) and ``event_types`` (every type :meth:`engage` may emit; each
    must have a weight in the spec's ``feedback.weights``). Everything random must go
    through the generator passed in, so a seed fixes the simulation.
    """

    event_types: ClassVar[tuple[str, ...]] = ()
    ctx: UserModelContext

    def open(self) -> None:
        """Load data (called once before the first session)."""

    def query_types(self) -> tuple[str, ...]:
        """Every query type :meth:`sample` may produce, in report order."""
        raise NotImplementedError

    def mix_changes(self) -> list[float]:
        """Points in [0, 1] of the run where the query-type mix changes (marked on plots)."""
        return []

    def sample(self, rng: "np.random.Generator", progress: float) -> Session:
        """A session; ``progress`` in [0, 1) is how far the run is (for mixes that shift)."""
        raise NotImplementedError

    def engage(self, session: Session, ranking: list[str], rng: "np.random.Generator"
               ) -> list[Engagement]:
        """What the user does with ``ranking`` (entity ids, best first)."""
        raise NotImplementedError
