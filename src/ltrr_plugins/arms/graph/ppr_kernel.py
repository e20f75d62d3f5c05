"""The graph arm's push loop, compiled with numba.

One synchronous push round touches the out-edges of every node on the frontier, a
scattered update that numpy can only express as about ten passes over the edge list
(range expansion, gathers, a ``bincount``). Compiled, it is one pass; and it runs
without the GIL, so the graph arm overlaps the other arms of a batch.

Its work is proportional to the edges the push follows, never to the graph: the
frontier of the next round is found among the nodes this round gave mass to (not by a
scan of every node), and the scratch arrays are reused from call to call, reset only
where the push wrote (no allocation of the graph's size per query).

Imported lazily (numba takes ~0.3 s to import, and compiles once per machine: the
machine code is cached next to this file, or in numba's user cache).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")


def _limit(indptr: np.ndarray, v: int, tolerance: float, per_edge: bool) -> float:
    """The residual above which node ``v`` pushes."""
    if per_edge:
        return tolerance * max(indptr[v + 1] - indptr[v], 1)
    return tolerance


@numba.njit(cache=True, nogil=True)


def _stamped(stamp: np.ndarray, tag: int, count: int) -> np.ndarray:
    """The ``count`` nodes stamped ``tag``, ascending, by one pass over ``stamp``
    (cheaper than sorting them when they are a fair part of the graph)."""
    out = np.empty(count, dtype=np.int64)
    j = 0
    for v in range(len(stamp)):
        if stamp[v] == tag:
            out[j] = v
            j += 1
    return out


@numba.njit(cache=True, nogil=True)


def push(indptr: np.ndarray, indices: np.ndarray, transition: np.ndarray,
         seeds: np.ndarray, weights: np.ndarray, resid: np.ndarray, score: np.ndarray,
         stamp: np.ndarray, fresh: np.ndarray, reached: np.ndarray, alpha: float,
         tolerance: float, per_edge: bool, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate personalized PageRank from the seeds (see
    GraphArm.personalized_pagerank): ``iterations`` synchronous rounds in which every
    node whose residual exceeds its threshold keeps ``1 - alpha`` of it as score and
    spreads ``alpha`` of it along its out-edges (``transition``: P[u, v] in CSR order).
    Nodes push in ascending order, so results do not depend on how a frontier is found.
    A node's threshold is ``tolerance``, or with ``per_edge`` ``tolerance`` × its number
    of edges (at least 1): a hub then pushes only a mass worth its many edges, which
    bounds the edges followed per query by ~1 / (tolerance × (1 - alpha)) whatever the
    graph's size (the local push of Andersen, Chung & Lang, 2006).

    A round that follows few edges records the nodes it reaches and sorts them into the
    next frontier; one that follows many (a fair part of the graph) skips that
    bookkeeping and scans the graph afterwards, as does the final collection then.

    Scratch arrays of the graph's size: ``resid``, ``score`` (float64) and ``stamp``
    (int32), all zero on entry and again on return; ``fresh`` and ``reached`` (node
    ids), any content. Returns the nodes reached (ascending) and their scores."""
    n = len(resid)
    total = weights.sum()
    n_reached = 0
    scanned = False                           # some round did not record what it reached
    for j in range(len(seeds)):
        s = seeds[j]
        if stamp[s] == 0:
            stamp[s] = 1
            reached[n_reached] = s
            n_reached += 1
        resid[s] += weights[j] / total
    active = seeds.copy()                     # the seeds always push once
    for it in range(iterations):
        m = len(active)
        if m == 0:
            break
        mass = np.empty(m)
        edges = 0
        for j in range(m):
            u = active[j]
            mass[j] = resid[u]
            score[u] += (1.0 - alpha) * mass[j]
            resid[u] = 0.0
            edges += indptr[u + 1] - indptr[u]
        if edges * 8 > n:                     # a large round: push, then scan the graph
            scanned = True
            for j in range(m):
                u = active[j]
                spread = alpha * mass[j]
                for e in range(indptr[u], indptr[u + 1]):
                    resid[indices[e]] += spread * transition[e]
            count = 0
            for v in range(n):
                if resid[v] > _limit(indptr, v, tolerance, per_edge):
                    count += 1
            active = np.empty(count, dtype=np.int64)
            count = 0
            for v in range(n):
                if resid[v] > _limit(indptr, v, tolerance, per_edge):
                    active[count] = v
                    count += 1
            continue
        tag = it + 2
        n_fresh = 0                           # nodes given mass in this round
        for j in range(m):
            u = active[j]
            spread = alpha * mass[j]
            for e in range(indptr[u], indptr[u + 1]):
                v = indices[e]
                resid[v] += spread * transition[e]
                if stamp[v] != tag:
                    if stamp[v] == 0 and not scanned:
                        reached[n_reached] = v
                        n_reached += 1
                    stamp[v] = tag
                    fresh[n_fresh] = v
                    n_fresh += 1
        if n_fresh * 64 < n:
            touched = np.sort(fresh[:n_fresh]).astype(np.int64)
        else:
            touched = _stamped(stamp, tag, n_fresh)
        count = 0
        for j in range(n_fresh):
            if resid[touched[j]] > _limit(indptr, touched[j], tolerance, per_edge):
                count += 1
        active = np.empty(count, dtype=np.int64)
        count = 0
        for j in range(n_fresh):
            if resid[touched[j]] > _limit(indptr, touched[j], tolerance, per_edge):
                active[count] = touched[j]
                count += 1
    if scanned:                               # collect (and reset) by one pass
        count = 0
        for v in range(n):
            if score[v] != 0.0 or resid[v] != 0.0:
                count += 1
        nodes = np.empty(count, dtype=np.int64)
        out = np.empty(count)
        count = 0
        for v in range(n):
            if score[v] != 0.0 or resid[v] != 0.0:
                nodes[count] = v
                out[count] = score[v] + (1.0 - alpha) * resid[v]
                count += 1
            resid[v] = 0.0
            score[v] = 0.0
            stamp[v] = 0
        return nodes, out
    nodes = np.sort(reached[:n_reached]).astype(np.int64)
    out = np.empty(n_reached)
    for j in range(n_reached):
        v = nodes[j]
        out[j] = score[v] + (1.0 - alpha) * resid[v]
        resid[v] = 0.0
        score[v] = 0.0
        stamp[v] = 0
    return nodes, out
