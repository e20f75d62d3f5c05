"""Entity types on the request path: each candidate and result gets its type, a typed arm
returns only its types, and the results are blended within per-type quotas."""

from __future__ import annotations

from collections.abc import Mapping

from ltrr.spec.models import TypeQuota
from ltrr.types import Candidate, Ranked, Slot


class Typing:
    """What a typed catalog adds to a batch (built once per pipeline)."""

    def __init__(self, type_of: Mapping[str, str],
                 arm_types: Mapping[str, tuple[str, ...] | None],
                 quotas: Mapping[str, TypeQuota]):
        self.type_of = type_of
        self.arm_types = {a: frozenset(t) for a, t in arm_types.items() if t}
        self.quotas = dict(quotas)

    def slots(self, slots: list[list[Slot]]) -> None:
        """Stamp the type of each entity a slot names (a type intent for the policy)."""
        type_of = self.type_of
        for found in slots:
            for s in found:
                if s.entity_id is not None:
                    s.entity_type = type_of.get(s.entity_id)

    def candidates(self, per_arm: dict[str, list[Candidate]]) -> dict[str, list[Candidate]]:
        """Stamp each candidate's type; drop what a typed arm returned outside its types
        (an arm seeded by entities of other types, a memory of other engagements)."""
        type_of = self.type_of
        out = {}
        for arm, cands in per_arm.items():
            for c in cands:
                c.entity_type = type_of.get(c.entity_id)
            allowed = self.arm_types.get(arm)
            out[arm] = cands if allowed is None else \
                [c for c in cands if c.entity_type in allowed]
        return out

    def ranking(self, ranked: list[Ranked], k: int) -> list[Ranked]:
        """The ranker's order, typed, cut to ``k`` within the quotas (ranks renumbered)."""
        type_of = self.type_of
        for r in ranked:
            r.entity_type = type_of.get(r.entity_id)
        if self.quotas:
            ranked = blend(ranked, k, self.quotas)
        else:
            ranked = ranked[:k]
        for i, r in enumerate(ranked):
            r.rank = i + 1
        return ranked


def blend(ranked: list[Ranked], k: int, quotas: Mapping[str, TypeQuota]) -> list[Ranked]:
    """The first ``k`` of ``ranked`` whose per-type counts stay within ``quotas``: each
    type's ``min`` best results are kept first (as many as there are), the rest filled in
    ranked order while no type passes its ``max``; the ranked order is kept."""
    reserved: set[int] = set()
    counts: dict[str | None, int] = {}
    for t, q in quotas.items():
        if q.min:
            mine = [i for i, r in enumerate(ranked) if r.entity_type == t][: q.min]
            reserved.update(mine)
            counts[t] = len(mine)
    chosen = set(reserved)
    for i, r in enumerate(ranked):
        if len(chosen) >= k:
            break
        if i in chosen:
            continue
        q = quotas.get(r.entity_type)     # type: ignore[arg-type]
        if q is not None and q.max is not None and counts.get(r.entity_type, 0) >= q.max:
            continue
        chosen.add(i)
        counts[r.entity_type] = counts.get(r.entity_type, 0) + 1
    return [ranked[i] for i in sorted(chosen)][:k]
