"""DeepWalk: weighted random walks over the graph, gensim skip-gram node vectors, and a
faiss inner-product index searched with the seeds' mean vector."""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ltrr.types import Candidate

if TYPE_CHECKING:
    import numpy as np


def _hash(text: str) -> int:
    """Deterministic replacement of Python's salted ``hash`` for gensim's seeding."""
    return zlib.crc32(text.encode())


def random_walks(indptr: "np.ndarray", indices: "np.ndarray", data: "np.ndarray",
                 walk_length: int, walks_per_node: int, seed: int) -> "np.ndarray":
    """Weighted random walks from every non-isolated node, all advanced in lock-step.

    Returns an int array ``(walks, walk_length)``. Each step draws the next node with
    probability proportional to the edge weight, by one ``searchsorted`` on the global
    cumulative weights (rows are contiguous in CSR, so the draw stays within the row).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    deg = np.diff(indptr)
    starts = np.flatnonzero(deg > 0)
    cum = np.cumsum(data, dtype=np.float64)
    row_lo = np.concatenate(([0.0], cum))[indptr[:-1]]       # cumulative weight before row
    row_w = np.concatenate(([0.0], cum))[indptr[1:]] - row_lo
    walks = np.empty((len(starts) * walks_per_node, walk_length), dtype=np.int64)
    cur = np.tile(starts, walks_per_node)
    rng.shuffle(cur)
    walks[:, 0] = cur
    for step in range(1, walk_length):
        target = row_lo[cur] + rng.random(len(cur)) * row_w[cur]
        pos = np.searchsorted(cum, target, side="right")
        pos = np.clip(pos, indptr[cur], indptr[cur + 1] - 1)
        cur = indices[pos]
        walks[:, step] = cur
    return walks


class _Walks:
    """Walks as lists of str tokens (gensim's keys), converted lazily, re-iterable."""

    def __init__(self, walks: "np.ndarray", chunk: int = 4096):
        self.walks, self.chunk = walks, chunk

    def __iter__(self):
        for i in range(0, len(self.walks), self.chunk):
            yield from self.walks[i:i + self.chunk].astype(str).tolist()


class DeepWalk:
    """Expansion by node embeddings (a mixin of :class:`GraphArm`)."""

    def _embed(self, adj, n_entities: int, out_dir: Path,
               progress: Callable[[float], None]) -> dict[str, Any]:
        """DeepWalk: weighted walks → gensim skip-gram → normalised vectors + faiss index."""
        import faiss
        import numpy as np
        from gensim.models import Word2Vec
        from gensim.models.callbacks import CallbackAny2Vec

        p = self.params
        started = time.perf_counter()
        walks = random_walks(adj.indptr, adj.indices, adj.data, p.walk_length,
                             p.walks_per_node, p.seed)
        walked = time.perf_counter()
        progress(0.15)
        sentences = _Walks(walks)

        class _Progress(CallbackAny2Vec):
            def __init__(self):
                self.epoch = 0

            def on_epoch_end(self, model):
                self.epoch += 1
                progress(0.15 + 0.8 * self.epoch / p.epochs)

        model = Word2Vec(sentences=sentences, vector_size=p.dim, window=p.window,
                         min_count=1, sg=1, hs=0, negative=p.negative, workers=p.workers,
                         seed=p.seed, epochs=p.epochs, hashfxn=_hash, sorted_vocab=False,
                         callbacks=[_Progress()])
        trained = time.perf_counter()
        n_nodes = adj.shape[0]
        vectors = np.zeros((n_nodes, p.dim), dtype=np.float32)
        keys = np.array([int(k) for k in model.wv.index_to_key], dtype=np.int64)
        vectors[keys] = model.wv.vectors
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        np.save(out_dir / "vectors.npy", vectors)
        has = np.flatnonzero(norms[:n_entities, 0] > 0)
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(p.dim))
        index.add_with_ids(vectors[has], has.astype(np.int64))
        faiss.write_index(index, str(out_dir / "entities.faiss"))
        return {"walks": int(len(walks)), "walk_tokens": int(walks.size),
                "embedded_entities": int(len(has)),
                "seconds_walks": round(walked - started, 3),
                "seconds_word2vec": round(trained - walked, 3)}

    def _embedding(self, weights: list[dict[int, float]], ks: list[int]
                   ) -> list[list[Candidate]]:
        """One faiss search for the batch: each request's weighted mean seed vector."""
        import faiss
        import numpy as np

        out: list[list[Candidate]] = [[] for _ in weights]
        queries, todo = [], []
        for i, (wts, k) in enumerate(zip(weights, ks)):
            if not wts or k <= 0:
                continue
            seeds = np.fromiter(wts, dtype=np.int64, count=len(wts))
            w = np.fromiter(wts.values(), dtype=np.float32, count=len(wts))
            vecs = self._vectors[seeds]
            known = np.linalg.norm(vecs, axis=1) > 0         # isolated nodes have no vector
            seeds, w, vecs = seeds[known], w[known], vecs[known]
            query = (w[:, None] * vecs).sum(axis=0)
            norm = float(np.linalg.norm(query))
            if norm > 0:
                queries.append(query / norm)
                todo.append((i, seeds, vecs))
        if not todo:
            return out
        depth = max(ks[i] + int((seeds < self._n).sum()) for i, seeds, _ in todo)
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.params.threads)     # this thread's setting only
        try:
            sims, found = self._index.search(np.stack(queries).astype(np.float32),
                                             min(depth, self._index.ntotal))
        finally:
            faiss.omp_set_num_threads(previous)
        arm = self.ctx.node_id
        for (i, seeds, vecs), row_sims, row_found in zip(todo, sims, found):
            exclude = set(seeds.tolist())
            allowed = self._allowed
            keep = [(int(e), float(x)) for e, x in zip(row_found, row_sims)
                    if e >= 0 and int(e) not in exclude
                    and (allowed is None or allowed[int(e)])][:ks[i]]
            if not keep:
                continue
            rows = np.fromiter((e for e, _ in keep), dtype=np.int64, count=len(keep))
            best = (vecs @ self._vectors[rows].T).argmax(axis=0).tolist()   # most similar seed
            out[i] = [Candidate(self._id_at(e), arm, rank, x, seed=self.node_name(int(seeds[b])))
                      for rank, ((e, x), b) in enumerate(zip(keep, best), 1)]
        return out
