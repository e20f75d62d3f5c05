"""The data contracts that flow between components.

Everything here is a plain slotted dataclass: cheap to create on the hot path and
easy to serialise into the decision log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Query:
    """One search request as it enters the pipeline."""

    request_id: str
    text: str
    user_id: str | None = None
    context: dict[str, Any] = field(default_factory=dict)


#: the name of a slot that asks for an entity type (its value: the type, e.g. "station")
TYPE_SLOT = "type"


@dataclass(slots=True)
class Slot:
    """A span of the query mapped to a catalog value (``tag = "hip hop"``)."""

    name: str          # slot type, e.g. "tag" or "artist"
    value: str         # the canonical catalog value
    start: int         # character span in the query text
    end: int
    score: float       # match quality in [0, 1]
    entity_id: str | None = None   # set when the value names one catalog entity
    entity_type: str | None = None  # that entity's type (set by the pipeline when typed)


@dataclass(slots=True)
class Candidate:
    """An entity one arm proposed: the arm, its rank (1-based) and score there."""

    entity_id: str
    arm: str
    rank: int
    score: float
    features: dict[str, float] | None = None
    seed: str | None = None        # upstream entity this candidate was expanded from
    entity_type: str | None = None  # set by the pipeline when the catalog is typed


@dataclass(slots=True)
class ArmRequest:
    """What an arm receives for one query of a batch."""

    query: Query
    k: int
    slots: list[Slot] = field(default_factory=list)
    seeds: list[Candidate] = field(default_factory=list)   # from upstream arms (``from:``)


@dataclass(slots=True)
class Action:
    """A policy's choice for one query: how many candidates to draw from each arm.

    ``pmf`` is the whole distribution the action was drawn from, as
    ``(allocation, probability)`` pairs, so the decision can be learned from later.
    """

    allocation: dict[str, int]
    probability: float = 1.0
    pmf: list[tuple[dict[str, int], float]] = field(default_factory=list)
    index: int = 0
    features: dict | None = None      # the context features the policy decided on


def action_key(allocation: Mapping[str, int] | Iterable[Mapping[str, Any]]) -> str:
    """Canonical key of an allocation: ``json.dumps(sorted(items))``, arms drawing zero
    candidates left out (they take no part in the action). Also accepts the decision
    log's ``[{"arm": a, "k": k}, ...]`` form. Policies, their action spaces and OPE all
    match allocations by this key."""
    if not isinstance(allocation, Mapping):
        allocation = {row["arm"]: int(row["k"]) for row in allocation}
    return json.dumps(sorted((str(a), int(k)) for a, k in allocation.items() if int(k) > 0))


def allocation_of(key: str) -> dict[str, int]:
    """The allocation an :func:`action_key` stands for."""
    return {a: int(k) for a, k in json.loads(key)}


@dataclass(slots=True)
class PolicyContext:
    """What a policy sees for one query: the query, its slots, and — when the policy asks
    for them — each arm's cheap evidence of how well it can answer (arm id → name →
    value, :meth:`ltrr.components.Arm.evidence_batch`)."""

    query: Query
    slots: list[Slot]
    evidence: dict[str, dict[str, float | str]] = field(default_factory=dict)


@dataclass(slots=True)
class Merged:
    """A candidate after merging: one entity, every arm hit that found it."""

    entity_id: str
    score: float
    sources: list[Candidate]

    @property
    def arms(self) -> list[str]:
        return [c.arm for c in self.sources]


@dataclass(slots=True)
class RankRequest:
    """What a ranker receives for one query of a batch: the merged candidates, best
    first by fused score, and how many results to return."""

    query: Query
    slots: list[Slot]
    merged: list[Merged]
    k: int


@dataclass(slots=True)
class Ranked:
    """A final result: position (1-based), entity and ranker score, with provenance."""

    rank: int
    entity_id: str
    score: float
    sources: list[Candidate]
    entity_type: str | None = None  # set by the pipeline when the catalog is typed


@dataclass(slots=True)
class Decision:
    """Everything needed to learn from one request later without re-running it."""

    request_id: str
    query: Query
    spec_hash: str
    slots: list[Slot]
    action: Action
    candidates: dict[str, list[Candidate]]     # per arm, as retrieved
    ranking: list[Ranked]
    timings_ms: dict[str, float]
    trace: list[str]
    timestamp: float
    #: arms that ran for this query but were dropped: arm id → "deadline" or "failed"
    #: (the reason in words is in ``trace``)
    dropped: dict[str, str] = field(default_factory=dict)
