"""Personalized PageRank over the CSR adjacency: the push loop (``ppr_kernel``, compiled
with numba), per-seed attribution of candidates, and the seeds' restart weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ltrr.types import Candidate
from ltrr_plugins.arms.graph.relations import _ranges

if TYPE_CHECKING:
    import numpy as np


class PersonalizedPageRank:
    """Expansion by personalized PageRank (a mixin of :class:`GraphArm`: uses the CSR
    arrays its ``open`` sets)."""

    def personalized_pagerank(self, weights: dict[int, float]
                              ) -> tuple["np.ndarray", "np.ndarray"]:
        """Approximate personalized PageRank from the weighted seeds: the nodes reached
        (ascending) and their scores; every other node scores 0.

        Synchronous push: in each round every node whose residual mass exceeds
        ``tolerance`` keeps ``1 - alpha`` of it as score and spreads ``alpha`` of it
        over its neighbours in proportion to edge weight; after ``iterations`` rounds
        the residual left is added as score. Work is proportional to the edges of the
        pushing nodes, not to the graph.
        """
        import numpy as np

        from ltrr_plugins.arms.graph.ppr_kernel import push

        p = self.params
        seeds = np.fromiter(weights, dtype=np.int64, count=len(weights))
        w = np.fromiter(weights.values(), dtype=np.float64, count=len(weights))
        return push(self._indptr, self._indices, self._transition, seeds, w,
                    *self._scratch(), p.alpha, p.tolerance, p.threshold == "edge",
                    p.iterations)

    def _scratch(self) -> tuple["np.ndarray", ...]:
        """This thread's scratch arrays for the push: residual, score and stamp (all
        zero between calls), and two node lists. Allocated zeroed (lazily, by the OS),
        they hold memory only where pushes have written."""
        import numpy as np

        local = self._local
        arrays = getattr(local, "push", None)
        if arrays is None:
            node = self._indices.dtype
            arrays = local.push = (np.zeros(self._size), np.zeros(self._size),
                                   np.zeros(self._size, dtype=np.int32),
                                   np.zeros(self._size, dtype=node),
                                   np.zeros(self._size, dtype=node))
        return arrays

    def attribute(self, weights: dict[int, float], entities: "np.ndarray") -> "np.ndarray":
        """Index into ``weights`` of the seed contributing most to each of ``entities``.

        Contribution of seed s to node v over the walks of one and two steps — the
        leading terms of PPR: ``w_s * (alpha * P[s, v] + alpha² * P²[s, v])``. A node
        no seed reaches in two steps is attributed to the heaviest seed.
        """
        import numpy as np

        a = self.params.alpha
        seeds = np.fromiter(weights, dtype=np.int64, count=len(weights))
        w = np.fromiter(weights.values(), dtype=np.float64, count=len(weights))
        indptr, indices = self._indptr, self._indices
        hop = np.zeros((len(seeds), self._size))    # P[s, :] per seed (calloc: lazy pages)
        for j, s in enumerate(seeds.tolist()):
            lo, hi = indptr[s], indptr[s + 1]
            hop[j, indices[lo:hi]] = self._transition[lo:hi]
        deg = self._degree[entities]
        edges = _ranges(indptr[entities], indptr[entities + 1])
        two = np.zeros((len(seeds), len(entities)))
        if len(edges):
            # P²[s, v] = sum_u P[s, u] * P[u, v], with P[u, v] read from row v (A symmetric)
            near = indices[edges]
            terms = hop[:, near] * (self._weight[edges] * self._inv_degree[near])
            nz = deg > 0
            starts = np.concatenate(([0], np.cumsum(deg)[:-1]))[nz]
            two[:, nz] = np.add.reduceat(terms, starts, axis=1)
        contrib = w[:, None] * (a * hop[:, entities] + a * a * two)
        best = contrib.argmax(axis=0)
        best[contrib.max(axis=0) <= 0] = int(w.argmax())
        return best

    def personalization(self, weights: dict[int, float]) -> dict[int, float]:
        """Restart mass per seed node (unnormalised): weight × weighted degree ^
        ``seed_degree_power``; isolated seeds, which reach nothing, are left out."""
        power = self.params.seed_degree_power
        return {s: w * float(self._volume[s]) ** power for s, w in weights.items()
                if self._volume[s] > 0}

    def _ppr(self, weights: dict[int, float], k: int) -> list[Candidate]:
        import numpy as np

        weights = self.personalization(weights)
        if not weights:
            return []
        nodes, scores = self.personalized_pagerank(weights)
        keep = (nodes < self._n) & (scores > 0)
        keep &= ~np.isin(nodes, np.fromiter(weights, dtype=np.int64, count=len(weights)))
        if self._allowed is not None:
            keep &= self._allowed[np.minimum(nodes, self._n - 1)]
        found, ent = nodes[keep], scores[keep]
        if len(found) > k:
            top = np.argpartition(-ent, k - 1)[:k]
            found, ent = found[top], ent[top]
        order = np.lexsort((found, -ent))
        found, ent = found[order], ent[order]
        seeds = list(weights)
        best = self.attribute(weights, found).tolist()
        arm = self.ctx.node_id
        return [Candidate(self._id_at(e), arm, rank, x, seed=self.node_name(seeds[b]))
                for rank, (e, x, b) in enumerate(zip(found.tolist(), ent.tolist(), best), 1)]
