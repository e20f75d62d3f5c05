"""Base classes of the component kinds a plugin can provide.

A component class declares its ``kind``, its registered ``name`` and a pydantic
``Params`` model; the compiler validates a node's ``with:`` block against
``Params`` without instantiating the class. At run time the class is built with
a :class:`ComponentContext`, ``open()``-ed (load indexes, models), ``warm()``-ed
(first-call costs paid outside any deadline), then called with whole batches.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from ltrr.spec import resolve_path
from ltrr.types import (Action, ArmRequest, Candidate, Merged, PolicyContext, Query, RankRequest,
                        Ranked, Slot)

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

    from ltrr.catalog import Catalog


class Kind(str, enum.Enum):
    """Component kinds, in the order a query meets them."""

    ENCODER = "encoder"
    SLOTTER = "slotter"
    POLICY = "policy"
    ARM = "arm"
    MERGER = "merger"
    RANKER = "ranker"


class Params(BaseModel):
    """Base of component params models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Problem:
    """A compile-time problem a component found in its params.

    ``path`` is relative to the node's ``with:`` block (``("allocation", "lexical")``)
    or, when ``node_level`` is true, relative to the node itself (``("budget",)``).
    """

    message: str
    path: tuple[str | int, ...] = ()
    hint: str | None = None
    node_level: bool = False


#: What a column must hold: ``scalar`` (not a list or struct: ids, groups), ``string``
#: (text, not lists), ``text``
#: (a scalar or a list of scalars: words to index or match), ``number`` (integers,
#: floats or booleans), ``any``.
ColumnKind = Literal["scalar", "string", "text", "number", "any"]


@dataclass(frozen=True)
class ColumnUse:
    """A column a component reads, named at ``path`` of its ``with:`` block (by the key
    there, when ``key``: ``fields: {title: 2.0}``)."""

    name: str
    path: tuple[str | int, ...]
    kind: ColumnKind = "any"
    key: bool = False


@dataclass(frozen=True)
class TableUse:
    """A table a component reads: the catalog (``file`` None) or a file named at
    ``path`` of its ``with:`` block, relative to the spec's folder; ``what`` names it in
    messages ("relation file")."""

    columns: tuple[ColumnUse, ...]
    file: str | None = None
    path: tuple[str | int, ...] = ()
    what: str = "file"
    format: str | None = None


@dataclass(frozen=True)
class PlanView:
    """What a component may inspect of the plan while it is compiled."""

    arms: tuple[str, ...]
    slotters: tuple[str, ...]
    budget: int
    output_k: int
    arm_max_k: dict[str, int] = field(default_factory=dict)
    encoders: tuple[str, ...] = ()
    #: the catalog's entity types (empty: untyped) and each arm's (None: every type)
    types: tuple[str, ...] = ()
    arm_types: dict[str, tuple[str, ...] | None] = field(default_factory=dict)

    def unknown_type(self, name: str, at: tuple, params: str) -> "Problem | None":
        """A Problem at ``at`` when ``name`` is not one of the catalog's entity types
        (hint: the closest declared one; on an untyped catalog, to declare types or drop
        ``params``)."""
        if name in self.types:
            return None
        if not self.types:
            hint = f"declare catalog.types first, or drop {params}"
        else:
            import difflib

            close = difflib.get_close_matches(name, self.types, n=1)
            hint = (f"did you mean '{close[0]}'? " if close else "") + \
                f"types: {', '.join(self.types)}"
        return Problem(f"'{name}' is not an entity type of the catalog", at, hint=hint)


@dataclass
class ComponentContext:
    """Run-time surroundings of one node: its id, state folder, the catalog, the spec."""

    node_id: str
    state_dir: Path
    spec_dir: Path
    catalog_loader: Callable[[], "Catalog"]
    plan: PlanView
    node_loader: Callable[[str], "Component"] | None = None
    #: the entity types this node retrieves (an arm's ``types:``); None: every type
    types: tuple[str, ...] | None = None
    whole_catalog_loader: Callable[[], "Catalog"] | None = None

    @property
    def catalog(self) -> "Catalog":
        """The entities this node works on: the rows of its ``types`` for a typed arm."""
        return self.catalog_loader()

    @property
    def whole_catalog(self) -> "Catalog":
        """Every entity of every type (an arm that expands across types builds on it)."""
        return (self.whole_catalog_loader or self.catalog_loader)()

    def resolve(self, path: str | Path) -> Path:
        """A path from the node's params, resolved against the spec's folder."""
        return resolve_path(self.spec_dir, path)

    def node(self, node_id: str) -> "Component":
        """Another node of the plan (e.g. an encoder named in params), opened, shared."""
        if self.node_loader is None:
            raise RuntimeError("no plan nodes are available in this context")
        return self.node_loader(node_id)

    @property
    def learned_dir(self) -> Path:
        """Where a learner keeps what it learned from feedback (survives re-indexing)."""
        return self.state_dir.with_name(self.state_dir.name + ".learned")


class Pluggable:
    """What every class a plugin registers has (components and simulated-user models):
    a registered ``name``, a ``Params`` model, the modules it ``requires``, and
    construction from validated params and a context."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = Params
    #: Modules imported when it opens → the requirement that installs them
    #: (``{"faiss": "ltrr[dense]"}``). The compiler refuses a node whose modules are
    #: missing, naming the install command (``ltrr.extras``).
    requires: ClassVar[dict[str, str]] = {}

    def __init__(self, params: BaseModel, ctx: Any):
        self.params = params
        self.ctx = ctx

    @classmethod
    def summary(cls) -> str:
        """First line of the class docstring (shown by ``ltrr plugins``)."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


class Component(Pluggable):
    """Common base: construction, lifecycle, compile-time checks.

    ``references`` maps params fields that name other nodes to the kind they must
    be (``{"encoder": Kind.ENCODER}``); the compiler checks them and draws the edge.
    """

    kind: ClassVar[Kind]
    references: ClassVar[dict[str, Kind]] = {}
    #: False when results never depend on the query's ``user_id`` or ``context``: a
    #: ``cache:`` on the node then shares its entries across users.
    reads_user: ClassVar[bool] = True
    ctx: ComponentContext

    @classmethod
    def check(cls, params: BaseModel, plan: PlanView) -> list[Problem]:
        """Compile-time checks that need the rest of the plan. Must be cheap."""
        return []

    @classmethod
    def tables(cls, params: BaseModel) -> list[TableUse]:
        """The catalog columns and data files this node reads, checked against the
        files' schemas before anything opens (``ltrr validate`` and every command)."""
        return []

    def open(self) -> None:
        """Load heavy state (indexes, models). Called once before the first batch."""

    def warm(self) -> None:
        """Pay one-time costs now, not in the first query: class loading and the JIT of
        a JVM, a searcher's first search, an encoder's first call. Called once after
        every node is open (``ctx.node`` works), before the first batch and outside any
        deadline. Must not change state or results. Default: nothing."""

    def close(self) -> None:
        """Release resources."""


class Indexed:
    """Mixin for components whose state ``ltrr index`` builds from the catalog.

    ``build`` writes into ``out_dir`` (a fresh temporary folder that the framework
    renames into place only when ``build`` returns), and ``open`` reads
    ``self.ctx.state_dir``.

    ``open_unindexed``: True for a component cheap enough to build its state when the
    pipeline opens, into a temporary folder (see :meth:`unindexed_state`), while
    ``ltrr index`` has not built it yet — a spec then runs before ``ltrr index``, as
    it did before the component kept an index. A stale index is still an error.
    """

    open_unindexed: bool = False

    def unindexed_state(self) -> Path:
        """The folder ``open`` reads: ``ctx.state_dir`` once ``ltrr index`` built it;
        before that (``open_unindexed``), a temporary folder built now and removed when
        the component is collected."""
        state = self.ctx.state_dir
        if state.is_dir() or not self.open_unindexed:    # built (renamed into place whole)
            return state
        import tempfile

        self._unindexed = tempfile.TemporaryDirectory(prefix=f"ltrr-{self.ctx.node_id}-")
        folder = Path(self._unindexed.name)
        self.build(folder, lambda done, total: None)
        return folder

    def state_key(self) -> dict[str, Any]:
        """The params the built state depends on (default: all of them).

        Narrow it so that changing a query-time param (a boost, k1) does not force a
        rebuild; the index is rebuilt when the catalog or this key changes.
        """
        return self.params.model_dump(mode="json")

    def build(self, out_dir: Path, progress: Callable[[int, int], None]) -> dict[str, Any]:
        """Build state from ``self.ctx.catalog`` into ``out_dir``; return stats to show.

        Call ``progress(done, total)`` as work advances (drives the progress bar).
        """
        raise NotImplementedError


class Learner:
    """Mixin for components that learn from feedback (``ltrr feedback``, ``ltrr train``).

    ``learn`` gets new interactions — feedback events joined to the decisions they
    answer (see :func:`ltrr.feedback.interactions`) — and must persist what it
    learned atomically under ``self.ctx.learned_dir`` before returning.
    """

    #: Set by learners that also need the decisions the interactions answer (every
    #: logged column, e.g. all candidates and slots): they get ``learn(interactions,
    #: decisions=frame)``; see :func:`ltrr.feedback.interactions.learn_from`.
    learns_from_decisions = False

    def learn(self, interactions: "pl.DataFrame") -> dict[str, Any]:
        """Update from new interactions; return stats to show."""
        raise NotImplementedError


class Encoder(Component):
    """Turns texts into vectors (shared by the arms that name it)."""

    kind = Kind.ENCODER

    @property
    def dim(self) -> int:
        """Vector dimension."""
        raise NotImplementedError

    def identity(self) -> str:
        """What determines the vectors (model and settings): part of index fingerprints."""
        return f"{self.name}:{self.params.model_dump_json()}"

    def encode(self, texts: list[str], progress: Callable[[int, int], None] | None = None
               ) -> "np.ndarray":
        """``(len(texts), dim)`` float32 vectors, L2-normalised, in order."""
        raise NotImplementedError


class Slotter(Component):
    """Query understanding: find slots (tags, entities, ...) in each query."""

    kind = Kind.SLOTTER

    def slot_batch(self, queries: list[Query]) -> list[list[Slot]]:
        """Slots found in each query, one list per query, in query order."""
        raise NotImplementedError


class Arm(Component):
    """A candidate generator. ``seed_types`` says what it accepts via ``from:``.

    ``seed_types`` is a set of port names: ``"candidates"`` (from arms),
    ``"slots"`` (from slotters); empty means the arm takes no seeds.
    """

    kind = Kind.ARM
    seed_types: ClassVar[frozenset[str]] = frozenset()
    #: True when the arm finds nothing without seeds: a node of it needs ``from:``.
    needs_seeds: ClassVar[bool] = False
    #: True: runs on the pipeline's thread pool beside the other arms of its wave, and is
    #: abandoned at its deadline. False, for cheap pure-Python arms whose thread hand-off
    #: would cost more than their work: runs on the batch's own thread while the pool
    #: works, and is dropped afterwards if it overran its deadline.
    threaded: ClassVar[bool] = True

    def retrieve_batch(self, requests: list[ArmRequest]) -> list[list[Candidate]]:
        """At most ``request.k`` candidates per request, best first, ranks from 1.

        Receives every query of the batch that needs this arm in one call; must return
        one list per request, in request order. Runs in a worker thread (unless
        ``threaded`` is False).
        """
        raise NotImplementedError

    def evidence_batch(self, contexts: list["PolicyContext"]
                       ) -> list[dict[str, float | str]] | None:
        """Optional: per query, cheap signals of how well this arm can answer it, asked
        *before* the budget is allocated (the memory knows this query and how
        confidently; the dense index's best similarity). A learning policy with the
        ``evidence`` feature group sees them as ``<arm>_<name>``. Numbers are features
        with that value, strings categories. Must be cheap next to ``retrieve_batch``;
        None (the default): this arm gives none."""
        return None


class Policy(Component):
    """Chooses per query how many candidates each arm contributes."""

    kind = Kind.POLICY

    def choose_batch(self, contexts: list[PolicyContext]) -> list[Action]:
        """One action (allocation of the budget over arms, with its pmf) per query."""
        raise NotImplementedError


class Merger(Component):
    """Combines the arms' candidate lists into one list with provenance."""

    kind = Kind.MERGER

    def merge(self, per_arm: dict[str, list[Candidate]], k: int) -> list[Merged]:
        """One query's candidates by arm → at most ``k`` merged entities, best first,
        each keeping every arm hit that found it (provenance)."""
        raise NotImplementedError


class Ranker(Component):
    """Orders merged candidates into the final ranking."""

    kind = Kind.RANKER

    def rank(self, query: Query, merged: list[Merged], k: int) -> list[Ranked]:
        """The final top ``k`` for one query, ranks from 1."""
        raise NotImplementedError

    def rank_batch(self, requests: list[RankRequest]) -> list[list[Ranked]]:
        """Rankings for a batch (default: :meth:`rank` per request). Learned rankers
        override it to score the whole batch at once and to use the slots."""
        return [self.rank(r.query, r.merged, r.k) for r in requests]


KIND_BASES: dict[Kind, type[Component]] = {
    Kind.ENCODER: Encoder, Kind.SLOTTER: Slotter, Kind.POLICY: Policy, Kind.ARM: Arm,
    Kind.MERGER: Merger, Kind.RANKER: Ranker,
}
