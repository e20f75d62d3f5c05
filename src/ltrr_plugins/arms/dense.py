"""``dense`` arm: nearest neighbours of the query's embedding in a faiss index.

The catalog's ``fields`` are joined into one text per entity and embedded by the
encoder node named in ``encoder:``; vectors are L2-normalised, so inner product is
cosine similarity. Index types: ``flat`` (exact), ``hnsw`` (graph, approximate,
no training) and ``ivfpq`` (inverted lists + product quantization, trained, compact).

Embeddings are cached next to the state folder (``<state_dir>/<node>.cache/``),
keyed by the catalog's content, the encoder's identity and the fields: rebuilding
(``ltrr index --force``, another index type) reuses them instead of re-encoding.

Optional personalization: ``learn`` (fed by ``ltrr feedback``) keeps, per user, the
entities they engaged with; a request with a ``user_id`` then searches with its
query vector blended with the mean vector of that history.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import Field

from ltrr import extras
from ltrr.components import (Arm, ColumnUse, Encoder, Indexed, Kind, Learner, Params,
                             TableUse)
from ltrr.errors import StateError
from ltrr.files import link_or_copy
from ltrr_plugins.arms.dense_index import (FlatIndex, HnswIndex, IndexSpec, IvfPqIndex,
                                            PersonalizeParams)
from ltrr.hookspecs import hookimpl
from ltrr.state import atomic_write, atomic_write_json
from ltrr.tables import column
from ltrr.timestamps import valid_expr
from ltrr.types import ArmRequest, Candidate

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

CACHE_FORMAT = 1
CACHE_KEEP = 3          # embedding matrices kept in the cache (most recently used)


class DenseParams(Params):
    encoder: str = Field(description="Id of the encoder node (under `encoders:`) that embeds "
                                     "the catalog and the queries.")
    fields: list[str] = Field(min_length=1, description=(
        "Catalog columns whose text is embedded, joined with `separator` (list columns are "
        "joined with ', '; nulls are skipped)."))
    separator: str = Field(" ", description="Joins the fields' values into one text.")
    index: IndexSpec = Field(FlatIndex(), description=(
        "faiss index: {type: flat} | {type: hnsw, m, ef_construction, ef_search} | "
        "{type: ivfpq, nlist, m, nbits, nprobe}."))
    threads: int | None = Field(None, ge=1, description=(
        "faiss (OpenMP) threads for searches and builds; default: all cores. Process-wide."))
    personalize: PersonalizeParams | None = Field(None, description=(
        "Blend each request's query vector with its user's history vector (learned from "
        "feedback); off when absent."))


class DenseArm(Arm, Indexed, Learner):
    """Dense retrieval: faiss nearest neighbours of the query embedding (flat/HNSW/IVF-PQ)."""

    name = "dense"
    requires = extras.DENSE
    Params = DenseParams
    references = {"encoder": Kind.ENCODER}

    @classmethod
    def tables(cls, params: DenseParams) -> list[TableUse]:
        return [TableUse(tuple(ColumnUse(f, ("fields", i), "text")
                               for i, f in enumerate(params.fields)))]

    # --- helpers ------------------------------------------------------------------------

    def _encoder(self) -> Encoder:
        enc = self.ctx.node(self.params.encoder)
        if not isinstance(enc, Encoder):   # the compiler checks the kind; be explicit anyway
            raise StateError(f"'{self.params.encoder}' is not an encoder",
                             node=self.ctx.node_id, field="with.encoder",
                             hint="name a node declared under 'encoders:'")
        return enc

    def _texts(self) -> list[str]:
        frame = self.ctx.catalog.frame
        values = [column(frame, c, node=self.ctx.node_id, field=f"with.fields.{i}").to_list()
                  for i, c in enumerate(self.params.fields)]
        sep = self.params.separator
        out = []
        for row in zip(*values):
            parts = []
            for v in row:
                if v is None:
                    continue
                v = ", ".join(map(str, v)) if isinstance(v, list) else str(v)
                if v:
                    parts.append(v)
            out.append(sep.join(parts))
        return out

    @property
    def cache_dir(self) -> Path:
        """Embedding cache: survives index rebuilds, keyed by what the vectors depend on."""
        return self.ctx.state_dir.with_name(self.ctx.node_id + ".cache")

    def _cache_key(self, encoder: Encoder) -> str:
        blob = json.dumps({"format": CACHE_FORMAT, "catalog": self.ctx.catalog.fingerprint,
                           "ids": self.ctx.catalog.id_column, "encoder": encoder.identity(),
                           "fields": list(self.params.fields),
                           "separator": self.params.separator}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def state_key(self) -> dict[str, Any]:
        # ef_search, nprobe, refine, threads and personalize are query-time settings
        idx = self.params.index.model_dump(mode="json",
                                           exclude={"ef_search", "nprobe", "refine"})
        return {"fields": list(self.params.fields), "separator": self.params.separator,
                "index": idx, "encoder": self._encoder().identity(),
                "id_column": self.ctx.catalog.id_column}     # ids.json depends on it

    # --- build --------------------------------------------------------------------------

    def _embeddings(self, encoder: Encoder, progress: Callable[[int, int], None]
                    ) -> tuple["np.ndarray", Path, bool, float]:
        """The catalog's embeddings from the cache, or encoded now and cached."""
        import numpy as np

        n = len(self.ctx.catalog)
        path = self.cache_dir / f"embeddings-{self._cache_key(encoder)}.npy"
        if path.is_file():
            try:
                vectors = np.load(path, mmap_mode="r")
                if vectors.shape[0] == n and vectors.dtype == np.float32 and vectors.ndim == 2:
                    os.utime(path)   # most recently used
                    progress(n, n)
                    return vectors, path, True, 0.0
            except (OSError, ValueError):
                pass                  # unreadable: encode again and replace it
        texts = self._texts()
        encoder.dim                  # load the model (and export it once) before timing
        started = time.perf_counter()
        vectors = encoder.encode(texts, progress)
        seconds = time.perf_counter() - started
        if vectors.shape[0] != n:
            raise StateError(f"encoder returned {vectors.shape[0]} vectors for {n} texts",
                             node=self.ctx.node_id, field="with.encoder")
        array = np.ascontiguousarray(vectors, dtype=np.float32)
        atomic_write(path, lambda f: np.save(f, array))
        _prune(self.cache_dir, keep=CACHE_KEEP)
        return vectors, path, False, seconds

    def build(self, out_dir: Path, progress: Callable[[int, int], None]) -> dict[str, Any]:
        import faiss
        import numpy as np

        encoder = self._encoder()
        if self.params.threads:
            faiss.omp_set_num_threads(self.params.threads)
        ids = self.ctx.catalog.ids
        vectors, cached, reused, seconds = self._embeddings(encoder, progress)
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = x.shape
        index = self._new_index(dim, n)
        if not index.is_trained:
            index.train(x)
        for start in range(0, n, 10_000):      # adds in chunks: progress on big catalogs
            index.add(x[start:start + 10_000])
        faiss.write_index(index, str(out_dir / "index.faiss"))
        link_or_copy(cached, out_dir / "vectors.npy")
        atomic_write_json(out_dir / "ids.json", ids)
        stats: dict[str, Any] = {"documents": n, "dim": dim, "index": self.params.index.type,
                                 "embeddings": "reused" if reused else "encoded"}
        if not reused:
            stats["encode_seconds"] = round(seconds, 1)
            stats["docs_per_second"] = round(n / seconds, 1) if seconds else None
        return stats

    def _new_index(self, dim: int, n: int):
        import faiss

        spec, node = self.params.index, self.ctx.node_id
        if isinstance(spec, HnswIndex):
            index = faiss.IndexHNSWFlat(dim, spec.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = spec.ef_construction
            return index
        if isinstance(spec, IvfPqIndex):
            if dim % spec.m:
                divisors = [d for d in range(1, min(dim, 96) + 1) if dim % d == 0]
                raise StateError(f"m={spec.m} does not divide the embedding dimension {dim}",
                                 node=node, field="with.index.m",
                                 hint=f"use one of {', '.join(map(str, divisors[-6:]))}")
            need = max(spec.nlist, 2 ** spec.nbits)
            if n < need:
                raise StateError(
                    f"ivfpq cannot be trained on {n} vectors: nlist={spec.nlist} and "
                    f"nbits={spec.nbits} (2**nbits = {2 ** spec.nbits} codes) need at least "
                    f"{need}", node=node, field="with.index",
                    hint=f"lower with.index.nlist and with.index.nbits (e.g. nlist "
                         f"{max(1, n // 39)}, nbits {max(1, min(8, (n // 39).bit_length() - 1))})"
                         ", or use type: flat or hnsw for a catalog this small")
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFPQ(quantizer, dim, spec.nlist, spec.m, spec.nbits,
                                     faiss.METRIC_INNER_PRODUCT)
            return index
        return faiss.IndexFlatIP(dim)

    # --- serve --------------------------------------------------------------------------

    def open(self) -> None:
        import faiss
        import numpy as np

        node, state = self.ctx.node_id, self.ctx.state_dir
        self._lock = threading.Lock()
        self._enc = self._encoder()
        if self.params.threads:
            faiss.omp_set_num_threads(self.params.threads)
        try:
            self._index = faiss.read_index(str(state / "index.faiss"))
            self._ids: list[str] = json.loads((state / "ids.json").read_text())
            self._vectors = np.load(state / "vectors.npy", mmap_mode="r")
        except (OSError, RuntimeError, ValueError) as exc:
            raise StateError(f"cannot read the dense index in {state}: {exc}", node=node,
                             hint="rebuild it with `ltrr index <spec> --force`") from exc
        dim = self._enc.dim                # loads the model now, not on the first query
        if dim != self._index.d:
            raise StateError(f"the index holds {self._index.d}-d vectors but encoder "
                             f"'{self.params.encoder}' makes {dim}-d ones", node=node,
                             field="with.encoder", hint="rebuild with `ltrr index <spec>`")
        self._rows: dict[str, int] | None = None
        self._history: dict[str, list[list]] = self._load_history()
        self._user_vecs: dict[str, np.ndarray] = {}

    def close(self) -> None:
        self._index = None
        self._vectors = None

    def evidence_batch(self, contexts) -> list[dict[str, float]]:
        """Per query, the best score in the index (``top``: the nearest entity's cosine
        for normalised vectors); the query vectors are kept for this batch's retrieval."""
        texts = [c.query.text for c in contexts]
        if not texts or self._index.ntotal == 0:
            return [{} for _ in texts]
        q = self._encoded(texts)
        self._recent = dict(zip(texts, q))          # replaced whole: safe to read racily
        scores, rows = self._search(q, 1)
        return [{"top": round(float(s[0]), 4)} if r[0] >= 0 else {}
                for s, r in zip(scores.tolist(), rows.tolist())]

    def _encoded(self, texts: list[str]):
        import numpy as np

        recent = getattr(self, "_recent", None)     # what the evidence step encoded
        if recent and all(t in recent for t in texts):
            return np.stack([recent[t] for t in texts])
        return self._enc.encode(texts)

    def retrieve_batch(self, requests: list[ArmRequest]) -> list[list[Candidate]]:
        if not requests:
            return []
        q = self._encoded([r.query.text for r in requests])
        if self.params.personalize is not None and self._history:
            self._personalize(q, requests)
        k = min(max(r.k for r in requests), self._index.ntotal)
        if k <= 0:
            return [[] for _ in requests]
        scores, rows = self._search(q, k)
        arm, ids = self.ctx.node_id, self._ids
        out = []
        for r, s_row, i_row in zip(requests, scores.tolist(), rows.tolist()):
            out.append([Candidate(ids[i], arm, rank, s)
                        for rank, (s, i) in enumerate(
                            ((s, i) for s, i in zip(s_row[:r.k], i_row[:r.k]) if i >= 0), 1)])
        return out

    def _search(self, q, k: int):
        """faiss search with the query-time knobs, passed per call (thread-safe): HNSW's
        ``ef_search`` (at least ``k``), IVF-PQ's ``nprobe`` and exact re-scoring."""
        import faiss
        import numpy as np

        spec = self.params.index
        if isinstance(spec, HnswIndex):
            params = faiss.SearchParametersHNSW(efSearch=max(spec.ef_search, k))
            return self._index.search(q, k, params=params)
        if not isinstance(spec, IvfPqIndex):
            return self._index.search(q, k)
        params = faiss.SearchParametersIVF(nprobe=spec.nprobe)
        short = min(k * spec.refine, self._index.ntotal)
        scores, rows = self._index.search(q, short, params=params)
        if spec.refine == 1:
            return scores, rows
        exact = np.full(rows.shape, -np.inf, dtype=np.float32)
        for i, row in enumerate(rows):
            ok = row >= 0
            exact[i, ok] = np.asarray(self._vectors[row[ok]], dtype=np.float32) @ q[i]
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        top = np.take_along_axis(rows, order, axis=1)
        best = np.take_along_axis(exact, order, axis=1)
        top[~np.isfinite(best)] = -1
        return best, top

    # --- personalization ----------------------------------------------------------------

    @property
    def _profiles_path(self) -> Path:
        return self.ctx.learned_dir / "profiles.json"

    def _load_history(self) -> dict[str, list[list]]:
        path = self._profiles_path
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
            return {str(u): list(h) for u, h in data["users"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"learned profiles {path} are unreadable: {exc}",
                             node=self.ctx.node_id, field="with.personalize",
                             hint=f"delete {path} and replay feedback with `ltrr feedback`"
                             ) from exc

    def _row(self, entity: str) -> int | None:
        if self._rows is None:
            self._rows = {e: i for i, e in enumerate(self._ids)}
        return self._rows.get(entity)

    def user_vector(self, user: str) -> "np.ndarray | None":
        """The user's unit vector: weighted mean of their engaged entities' embeddings."""
        import numpy as np

        vec = self._user_vecs.get(user)
        if vec is not None:
            return vec
        history = self._history.get(user)
        if not history:
            return None
        rows, weights = [], []
        for entity, weight, _ in history:
            row = self._row(entity)
            if row is not None:
                rows.append(row)
                weights.append(weight)
        if not rows:
            return None
        w = np.asarray(weights, dtype=np.float32)[:, None]
        vec = (np.asarray(self._vectors[rows], dtype=np.float32) * w).sum(axis=0) / w.sum()
        norm = float(np.linalg.norm(vec))
        if norm < 1e-9:
            return None
        vec = (vec / norm).astype(np.float32)
        self._user_vecs[user] = vec
        return vec

    def _personalize(self, q: "np.ndarray", requests: list[ArmRequest]) -> None:
        import numpy as np

        w = self.params.personalize.weight
        for i, r in enumerate(requests):
            if r.query.user_id is None:
                continue
            u = self.user_vector(str(r.query.user_id))
            if u is None:
                continue
            v = (1.0 - w) * q[i] + w * u
            q[i] = v / max(float(np.linalg.norm(v)), 1e-12)

    def learn(self, interactions: "pl.DataFrame") -> dict[str, Any]:
        """Add the new engagements to each user's history (persisted atomically)."""
        import polars as pl

        p = self.params.personalize
        if p is None:
            return {"personalize": "off"}
        rows = interactions.filter(pl.col("user_id").is_not_null()
                                   & pl.col("entity_id").is_not_null()
                                   & (pl.col("weight").fill_null(0.0) > 0))
        if p.events is not None:
            rows = rows.filter(pl.col("type").is_in(p.events))
        sane = valid_expr("timestamp", max_future=None).fill_null(True)   # NaN, inf...
        bad_time = rows.filter(~sane).height
        rows = rows.filter(sane).sort("timestamp", nulls_last=False)
        with self._lock:
            history = {u: list(h) for u, h in self._history.items()}
            touched: set[str] = set()
            for user, entity, weight, ts in rows.select(
                    "user_id", "entity_id", "weight", "timestamp").iter_rows():
                history.setdefault(user, []).append([entity, float(weight),
                                                     float(ts or 0.0)])
                touched.add(user)
            for user in touched:
                h = sorted(history[user], key=lambda e: e[2])
                history[user] = h[-p.max_history:]
            if touched:
                atomic_write_json(self._profiles_path, {"format": 1, "users": history})
            vecs = {u: v for u, v in self._user_vecs.items() if u not in touched}
            self._history, self._user_vecs = history, vecs
        stats = {"events": rows.height, "users_updated": len(touched), "users": len(history)}
        if bad_time:
            stats["ignored_bad_timestamp"] = bad_time
        return stats


# --- files ------------------------------------------------------------------------------

def _prune(folder: Path, keep: int) -> None:
    files = sorted(folder.glob("embeddings-*.npy"), key=lambda p: p.stat().st_mtime,
                   reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


@hookimpl
def ltrr_components():
    return [DenseArm]
