"""``entity_lookup`` arm: the entities a slotter recognised by name (exact or fuzzy).

The "spearfishing" arm: ``from: [understand]`` hands it the slotter's entity slots
(e.g. the artist slot that matched "metalica" to Metallica), which it returns as
candidates ranked by match quality. It keeps no index.
"""

from __future__ import annotations

from ltrr.components import Arm
from ltrr.hookspecs import hookimpl
from ltrr.types import ArmRequest, Candidate


class EntityLookupArm(Arm):
    """Entities named in the query, as found by a slotter (needs `from: [<slotter>]`)."""

    name = "entity_lookup"
    reads_user = False
    threaded = False          # microseconds of Python per query: no thread hand-off
    seed_types = frozenset({"slots"})
    needs_seeds = True

    def retrieve_batch(self, requests: list[ArmRequest]) -> list[list[Candidate]]:
        arm = self.ctx.node_id
        out = []
        for r in requests:
            best: dict[str, Candidate] = {}
            for s in sorted(r.seeds, key=lambda s: -s.score):
                best.setdefault(s.entity_id, s)
            out.append([Candidate(c.entity_id, arm, rank, c.score, seed=c.arm)
                        for rank, c in enumerate(list(best.values())[:r.k], 1)])
        return out


@hookimpl
def ltrr_components():
    return [EntityLookupArm]
