"""The graph arm's push loop, compiled with numba.

One synchronous push round touches the out-edges of every node on the frontier, a
scattered update that numpy can only express as about ten passes over the edge list
(range expansion, gathers, a ``bincount``). Compiled, it is one pass; and it runs
without the GIL, so the graph arm overlaps the other arms of a batch.
Imported lazily (numba takes ~0.3 s to import, and compiles once per machine: the
machine code is cached next to this file, or in numba's user cache).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)


def push(indptr: np.ndarray, indices: np.ndarray, pdata: np.ndarray, seeds: np.ndarray,
         weights: np.ndarray, n: int, alpha: float, tolerance: float,
         iterations: int) -> np.ndarray:
    """Approximate personalized PageRank of every node (see GraphArm.personalized_pagerank):
    ``iterations`` synchronous rounds in which every node whose residual exceeds
    ``tolerance`` keeps ``1 - alpha`` of it as score and spreads ``alpha`` of it along
    its out-edges (``pdata`` holds the transition probabilities, in CSR order)."""
    resid = np.zeros(n)
    score = np.zeros(n)
    total = weights.sum()
    for j in range(len(seeds)):
        resid[seeds[j]] += weights[j] / total
    active = seeds.copy()                     # the seeds always push once
    mass = np.empty(n)
    for _ in range(iterations):
        m = len(active)
        if m == 0:
            break
        for j in range(m):
            u = active[j]
            mass[j] = resid[u]
            score[u] += (1.0 - alpha) * mass[j]
            resid[u] = 0.0
        for j in range(m):
            u = active[j]
            spread = alpha * mass[j]
            for e in range(indptr[u], indptr[u + 1]):
                resid[indices[e]] += spread * pdata[e]
        count = 0
        for v in range(n):
            if resid[v] > tolerance:
                count += 1
        active = np.empty(count, dtype=np.int64)
        count = 0
        for v in range(n):
            if resid[v] > tolerance:
                active[count] = v
                count += 1
    for v in range(n):
        score[v] += (1.0 - alpha) * resid[v]
    return score
