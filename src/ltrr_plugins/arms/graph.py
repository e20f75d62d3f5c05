"""``graph`` arm: related-entity expansion ("more like this") over a graph of relations.

At index time the arm builds one weighted, undirected graph (a scipy CSR adjacency) from
the relations the spec declares, each read from a Parquet file:

* ``bipartite``: an entity column and an attribute column (``artist_id`` – ``tag``).
  Each distinct attribute value becomes a namespaced node (``tag:hip hop``) linked to
  the entities carrying it, weighted by the number of rows per pair (``transform``ed).
* ``co_occurrence``: a group column and an entity column (``user_id`` groups the
  ``artist_id`` s a user played). Entities are compared by the cosine of their group
  vectors and each keeps its ``top_n`` most associated entities as neighbours.

Only catalog entities become entity nodes. The graph is persisted as a CSR adjacency
(``graph.npz``) with its node list (``nodes.json``).

At query time the seeds — upstream candidates (``from: [lexical]``), entity slots
(``from: [understand]``), each weighing 1/rank, and non-entity slots that name
attribute nodes (``slot_attributes``) — are expanded in one of two modes:

* ``ppr``: personalized PageRank restarting at the seeds in proportion to weight ×
  weighted degree (``seed_degree_power``), by a thresholded synchronous push over the
  CSR adjacency (compiled with numba, GIL released; work proportional to the edges of
  the nodes pushing, not to the graph);
* ``embedding``: DeepWalk node vectors (weighted random walks + gensim skip-gram, built
  at index time) in a faiss inner-product index, searched with the weighted mean of
  the seed vectors.

Seeds themselves are never returned. Each candidate's ``seed`` is the seed contributing
most to it over walks of one and two steps (``ppr``) or the seed whose vector is most
similar to it (``embedding``).
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal, Union

from pydantic import Field

from ltrr import extras
from ltrr.components import Arm, Indexed, Params, PlanView, Problem
from ltrr.errors import StateError
from ltrr.files import check_file, first_line, shown_names
from ltrr.hookspecs import hookimpl
from ltrr.types import ArmRequest, Candidate
from ltrr.text import normalize

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

FORMAT = 1          # bump when the files written by build() change shape


# --------------------------------------------------------------------------- params

Transform = Literal["log1p", "raw", "binary"]
Mode = Literal["ppr", "embedding"]


class BipartiteRelation(Params):
    kind: Literal["bipartite"] = Field(description="Entity – attribute pairs.")
    path: str = Field(description="Parquet file, relative to the spec's folder.")
    entity: str = Field(description="Column holding catalog entity ids.")
    attribute: str = Field(description="Column holding attribute values (e.g. tags).")
    namespace: str | None = Field(None, pattern=r"^[^:]+$", description=(
        "Prefix of the attribute nodes (`<namespace>:<value>`); default: the attribute "
        "column's name."))
    transform: Transform = Field("log1p", description=(
        "Edge weight from the number of rows per (entity, attribute) pair: log1p, raw "
        "(the count) or binary (1)."))
    min_entities: int = Field(2, ge=1, description=(
        "Drop attribute values linked to fewer catalog entities (they connect nothing)."))
    weight: float = Field(1.0, gt=0, description="Multiplier of this relation's edge weights.")


class CoOccurrenceRelation(Params):
    kind: Literal["co_occurrence"] = Field(description="Entities co-occurring in groups.")
    path: str = Field(description="Parquet file, relative to the spec's folder.")
    group: str = Field(description="Column holding the group (e.g. user_id).")
    entity: str = Field(description="Column holding catalog entity ids.")
    value: str | None = Field(None, description=(
        "Optional numeric column weighting an entity within its group (e.g. plays); "
        "absent: every row counts 1."))
    transform: Transform = Field("log1p", description=(
        "Applied to `value` before the cosine: log1p, raw or binary."))
    top_n: int = Field(20, ge=1, description=(
        "Neighbours kept per entity (by cosine of their group vectors)."))
    min_support: int = Field(1, ge=1, description=(
        "Ignore entity pairs that share fewer groups."))
    weight: float = Field(1.0, gt=0, description="Multiplier of this relation's edge weights.")


Relation = Annotated[Union[BipartiteRelation, CoOccurrenceRelation], Field(discriminator="kind")]


class GraphParams(Params):
    relations: list[Relation] = Field(min_length=1, description=(
        "Relations the graph is built from; each `kind: bipartite` or `kind: co_occurrence`."))
    mode: Mode = Field("ppr", description=(
        "ppr: personalized PageRank from the seeds; embedding: nearest DeepWalk vectors "
        "to the seeds' weighted mean."))
    slot_attributes: dict[str, str] = Field(default_factory=dict, description=(
        "Slot name → attribute namespace: a non-entity slot (e.g. tag 'hip hop') seeds the "
        "node `<namespace>:<value>` (e.g. {tag: tag})."))
    slot_weight: float = Field(1.0, gt=0, description=(
        "Weight of an attribute seed from a slot (times the slot's score); an entity seed "
        "of rank r weighs 1/r."))
    alpha: float = Field(0.5, gt=0, lt=1, description=(
        "ppr: probability of following an edge at each step (networkx's alpha); "
        "1 - alpha is the restart probability. Lower keeps results closer to the seeds."))
    seed_degree_power: float = Field(1.0, ge=0, le=2, description=(
        "ppr: a seed's restart mass is its weight × its weighted degree^power. 1 spreads "
        "each seed's mass over its edges by edge weight, so a seed with few neighbours "
        "does not outweigh a central one; 0 is classic personalized PageRank."))
    iterations: int = Field(8, ge=1, le=100, description="ppr: most push rounds.")
    tolerance: float = Field(1e-4, gt=0, description=(
        "ppr: a node pushes its residual mass only while it exceeds this (seed mass "
        "totals 1); smaller is more exact and slower."))
    dim: int = Field(32, ge=2, le=1024, description="embedding: vector dimension.")
    walk_length: int = Field(20, ge=2, description="embedding: nodes per random walk.")
    walks_per_node: int = Field(5, ge=1, description="embedding: walks started at each node.")
    window: int = Field(5, ge=1, description="embedding: skip-gram context window.")
    epochs: int = Field(1, ge=1, description="embedding: passes of Word2Vec over the walks.")
    negative: int = Field(3, ge=1, description="embedding: negative samples per pair.")
    workers: int = Field(1, ge=1, description=(
        "embedding: gensim training threads. 1 is deterministic for a given seed; more is "
        "faster but not reproducible."))
    seed: int = Field(0, description="embedding: seed of the walks and of Word2Vec.")
    threads: int = Field(1, ge=1, description=(
        "embedding: OpenMP threads of a faiss search, set for the calling thread only. "
        "1 suits single queries, above all on a busy machine; more can help large batches."))


# --------------------------------------------------------------------------- helpers

def _namespace(rel: BipartiteRelation) -> str:
    return rel.namespace or rel.attribute


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _hash(text: str) -> int:
    """Deterministic replacement of Python's salted ``hash`` for gensim's seeding."""
    return zlib.crc32(text.encode())


def _weights(values: "np.ndarray", how: Transform) -> "np.ndarray":
    import numpy as np

    values = values.astype(np.float64)
    if how == "log1p":
        return np.log1p(np.maximum(values, 0.0))
    if how == "binary":
        return (values > 0).astype(np.float64)
    return values


def _ranges(starts: "np.ndarray", ends: "np.ndarray") -> "np.ndarray":
    """Concatenation of ``arange(s, e)`` for each pair, vectorised."""
    import numpy as np

    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(ends - lens.cumsum(), lens)   # start of each range minus its offset
    return offsets + np.arange(total, dtype=np.int64)


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


# --------------------------------------------------------------------------- the arm

class GraphArm(Arm, Indexed):
    """Related entities by graph expansion from seeds (personalized PageRank or DeepWalk)."""

    name = "graph"
    requires = extras.GRAPH
    reads_user = False
    Params = GraphParams
    seed_types = frozenset({"candidates", "slots"})

    # ---- compile time

    @classmethod
    def check(cls, params: GraphParams, plan: PlanView) -> list[Problem]:
        problems = []
        spaces: dict[str, int] = {}
        for i, rel in enumerate(params.relations):
            if isinstance(rel, BipartiteRelation):
                ns = _namespace(rel)
                if ns in spaces:
                    problems.append(Problem(
                        f"namespace '{ns}' is already used by relation {spaces[ns]}",
                        ("relations", i, "namespace"),
                        hint="give each bipartite relation its own `namespace`"))
                spaces.setdefault(ns, i)
        for slot, ns in params.slot_attributes.items():
            if ns not in spaces:
                problems.append(Problem(
                    f"slot '{slot}' maps to namespace '{ns}', which no bipartite relation "
                    f"creates", ("slot_attributes", slot),
                    hint=f"namespaces: {', '.join(spaces) or '(none)'}"))
        return problems

    # ---- state

    def _relation_path(self, i: int, rel: BipartiteRelation | CoOccurrenceRelation) -> Path:
        path = self.ctx.resolve(rel.path)
        check_file(path, "relation file", where=None, node=self.ctx.node_id,
                   field=f"with.relations.{i}.path", hint="paths are relative to the spec's "
                                                          "folder; relations are Parquet files")
        return path

    def state_key(self) -> dict[str, Any]:
        p = self.params
        key: dict[str, Any] = {
            "format": FORMAT, "mode": p.mode,
            "relations": [r.model_dump(mode="json") for r in p.relations],
            # the relation files' content: the index is stale when they change
            "files": [_file_digest(self._relation_path(i, r))
                      for i, r in enumerate(p.relations)],
        }
        if p.mode == "embedding":
            key["embedding"] = {f: getattr(p, f) for f in (
                "dim", "walk_length", "walks_per_node", "window", "epochs", "negative",
                "workers", "seed")}
        return key

    def _read(self, i: int, rel, columns: list[tuple[str, str]]) -> "pl.DataFrame":
        """The relation's columns (param name, column), or a StateError naming the field."""
        import polars as pl

        path = self._relation_path(i, rel)
        try:
            schema = pl.read_parquet_schema(path)
        except Exception as exc:
            raise StateError(f"cannot read relation file {path} as Parquet: {first_line(exc)}",
                             node=self.ctx.node_id, field=f"with.relations.{i}.path",
                             hint="relations must be Parquet files") from exc
        for param, col in columns:
            if col not in schema:
                raise StateError(f"relation file {path.name} has no column '{col}'",
                                 node=self.ctx.node_id, field=f"with.relations.{i}.{param}",
                                 hint=f"columns: {shown_names(schema)}")
        return pl.read_parquet(path, columns=list(dict.fromkeys(c for _, c in columns)))

    def _bipartite(self, i: int, rel: BipartiteRelation, entities: "pl.DataFrame"):
        """(entity rows, attribute values, weights, rows dropped) of one bipartite relation."""
        import polars as pl

        df = self._read(i, rel, [("entity", rel.entity), ("attribute", rel.attribute)])
        df = df.select(pl.col(rel.entity).cast(pl.String).alias("_e"),
                       pl.col(rel.attribute).cast(pl.String).alias("_a")).drop_nulls()
        n_rows = df.height
        df = df.join(entities, on="_e", how="inner")
        dropped = n_rows - df.height
        pairs = df.group_by("_row", "_a").len("_n")
        keep = pairs.group_by("_a").len("_deg").filter(pl.col("_deg") >= rel.min_entities)
        pairs = pairs.join(keep.select("_a"), on="_a", how="semi").sort("_a", "_row")
        w = _weights(pairs["_n"].to_numpy(), rel.transform) * rel.weight
        return pairs["_row"].to_numpy(), pairs["_a"].to_list(), w, dropped

    def _co_occurrence(self, i: int, rel: CoOccurrenceRelation, entities: "pl.DataFrame",
                       n: int):
        """(row, col, weight) entity–entity edges: each entity's top_n by cosine."""
        import numpy as np
        import polars as pl
        import scipy.sparse as sp

        cols = [("group", rel.group), ("entity", rel.entity)]
        if rel.value:
            cols.append(("value", rel.value))
        df = self._read(i, rel, cols)
        if rel.value and not df.schema[rel.value].is_numeric():
            raise StateError(f"column '{rel.value}' is not numeric ({df.schema[rel.value]})",
                             node=self.ctx.node_id, field=f"with.relations.{i}.value",
                             hint="name a numeric column, or drop `value`")
        df = df.select(pl.col(rel.group).cast(pl.String).alias("_g"),
                       pl.col(rel.entity).cast(pl.String).alias("_e"),
                       (pl.col(rel.value).cast(pl.Float64) if rel.value
                        else pl.lit(1.0)).alias("_v")).drop_nulls()
        n_rows = df.height
        df = df.join(entities, on="_e", how="inner")
        dropped = n_rows - df.height
        # sorted, with group codes by group name: the same input gives the same floats
        df = df.group_by("_row", "_g").agg(pl.col("_v").sum()).sort("_row", "_g")
        groups = (df["_g"].rank("dense") - 1).to_numpy().astype(np.int64)
        rows = df["_row"].to_numpy()
        vals = _weights(df["_v"].to_numpy(), rel.transform)
        n_groups = int(groups.max()) + 1 if len(groups) else 0
        x = sp.csr_matrix((vals, (rows, groups)), shape=(n, max(n_groups, 1)))
        x.eliminate_zeros()
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        xn = sp.diags(1.0 / norms) @ x
        sim = (xn @ xn.T).tocsr()
        if rel.min_support > 1:
            b = (x > 0).astype(np.float32)
            support = (b @ b.T).tocsr()
            sim = sim.multiply(support >= rel.min_support).tocsr()
        sim.setdiag(0)
        sim.eliminate_zeros()
        out_r, out_c, out_w = [], [], []
        ip, ix, dv = sim.indptr, sim.indices, sim.data
        for r in np.flatnonzero(np.diff(ip)):
            a, b = ip[r], ip[r + 1]
            # best top_n by cosine, ties broken by entity row (deterministic)
            sel = (np.lexsort((ix[a:b], -dv[a:b]))[:rel.top_n] + a
                   if b - a > rel.top_n else np.arange(a, b))
            out_r.append(np.full(len(sel), r))
            out_c.append(ix[sel])
            out_w.append(dv[sel])
        if not out_r:
            return np.zeros(0, int), np.zeros(0, int), np.zeros(0), dropped
        return (np.concatenate(out_r), np.concatenate(out_c),
                np.concatenate(out_w) * rel.weight, dropped)

    def build(self, out_dir: Path, progress: Callable[[int, int], None]) -> dict[str, Any]:
        import numpy as np
        import polars as pl
        import scipy.sparse as sp
        from scipy.sparse.csgraph import connected_components

        p = self.params
        started = time.perf_counter()
        total = 100
        ids = self.ctx.catalog.ids
        n = len(ids)
        entities = pl.DataFrame({"_e": ids, "_row": np.arange(n, dtype=np.int64)})
        attributes: list[str] = []
        attr_index: dict[str, int] = {}
        stats: dict[str, Any] = {"relations": []}
        share = 30 // len(p.relations)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for i, rel in enumerate(p.relations):
            if isinstance(rel, BipartiteRelation):
                rows, values, w, dropped = self._bipartite(i, rel, entities)
                ns = _namespace(rel)
                before = len(attributes)
                nodes = np.empty(len(values), dtype=np.int64)
                last, node = None, -1
                for j, v in enumerate(values):          # values are sorted: one lookup each
                    if v != last:
                        name = f"{ns}:{v}"
                        node = attr_index.get(name)
                        if node is None:
                            node = attr_index[name] = n + len(attributes)
                            attributes.append(name)
                        last = v
                    nodes[j] = node
                parts.append((rows, nodes, w))
                stats["relations"].append({"kind": rel.kind, "namespace": ns,
                                           "attribute_nodes": len(attributes) - before,
                                           "edges": len(w), "rows_not_in_catalog": dropped})
            else:
                r, c, w, dropped = self._co_occurrence(i, rel, entities, n)
                # a pair in the top-N of both ends is one edge (the cosine is symmetric)
                lo, hi = np.minimum(r, c), np.maximum(r, c)
                pairs = pl.DataFrame({"u": lo, "v": hi, "w": w}).group_by("u", "v").agg(
                    pl.col("w").max())
                parts.append((pairs["u"].to_numpy(), pairs["v"].to_numpy(),
                              pairs["w"].to_numpy()))
                stats["relations"].append({"kind": rel.kind, "edges": pairs.height,
                                           "rows_not_in_catalog": dropped})
            progress((i + 1) * share, total)
        # edges of several relations between the same two nodes add up
        edges = pl.DataFrame({
            "u": np.concatenate([a for a, _, _ in parts]).astype(np.int64),
            "v": np.concatenate([b for _, b, _ in parts]).astype(np.int64),
            "w": np.concatenate([c for _, _, c in parts]).astype(np.float64),
        }).group_by("u", "v").agg(pl.col("w").sum()).filter(pl.col("w") > 0).sort("u", "v")
        if edges.height == 0:
            raise StateError("the relations link no catalog entities: the graph has no edges",
                             node=self.ctx.node_id, field="with.relations",
                             hint="check that the relations' entity columns hold the catalog's "
                                  f"ids (column '{self.ctx.catalog.id_column}')")
        size = n + len(attributes)
        # each undirected edge once (u < v): the symmetric adjacency is A + A^T
        u, v, w = edges["u"].to_numpy(), edges["v"].to_numpy(), edges["w"].to_numpy()
        upper = sp.csr_matrix((w, (u, v)), shape=(size, size), dtype=np.float64)
        adj = (upper + upper.T).tocsr()
        adj.sort_indices()
        degree = np.diff(adj.indptr)
        _, labels = connected_components(adj, directed=False)
        sizes = np.bincount(labels)
        stats.update({
            "entity_nodes": n, "attribute_nodes": len(attributes),
            "edges": edges.height,
            "isolated_entities": int((degree[:n] == 0).sum()),
            "components": int((sizes > 1).sum()),
            "largest_component": int(sizes.max()) if (sizes > 1).any() else 0,
            "seconds_graph": round(time.perf_counter() - started, 3),
        })
        sp.save_npz(out_dir / "graph.npz", adj, compressed=False)
        (out_dir / "nodes.json").write_text(json.dumps(
            {"entities": n, "attributes": attributes}, ensure_ascii=False))
        progress(35, total)
        if p.mode == "embedding":
            stats.update(self._embed(adj, n, out_dir, lambda f: progress(35 + int(60 * f),
                                                                           total)))
        progress(total, total)
        return stats

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

    # ---- query time

    def open(self) -> None:
        import numpy as np
        import scipy.sparse as sp

        state = self.ctx.state_dir
        embedding = self.params.mode == "embedding"
        try:
            adj = sp.load_npz(state / "graph.npz").tocsr()
            nodes = json.loads((state / "nodes.json").read_text())
            if embedding:
                import faiss

                self._vectors = np.load(state / "vectors.npy")
                self._index = faiss.read_index(str(state / "entities.faiss"))
            self._n = int(nodes["entities"])
            self._attributes: list[str] = nodes["attributes"]
            if adj.shape[0] != self._n + len(self._attributes) or self._n != len(
                    self.ctx.catalog) or (embedding and len(self._vectors) != adj.shape[0]):
                raise ValueError("node counts of its files disagree")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise StateError(f"graph index in {state} is unreadable: {exc}",
                             node=self.ctx.node_id,
                             hint="rebuild it with `ltrr index --force`") from exc
        self._attr: dict[tuple[str, str], list[int]] = {}   # (namespace, key) → nodes
        for j, name in enumerate(self._attributes):
            ns, _, value = name.partition(":")
            self._attr.setdefault((ns, normalize(value)), []).append(self._n + j)
        self._ids = self.ctx.catalog.ids
        # the random walk's transition matrix P = D^-1 A, over A's CSR structure
        deg = np.asarray(adj.sum(axis=1)).ravel()
        inv = np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)
        self._indptr = adj.indptr.astype(np.int64)
        self._indices = adj.indices.astype(np.int64)
        self._degree = np.diff(self._indptr)
        self._volume = deg                                          # weighted degree
        self._pdata = adj.data * np.repeat(inv, self._degree)      # P[u, v] = A[u, v] / d_u
        self._qdata = adj.data * inv[self._indices]                 # P[v, u] at A's (u, v)
        self._size = adj.shape[0]
        if embedding:
            self._index.search(self._vectors[:1], 1)      # warm up: the first search is slow
        elif self._size:
            self.personalized_pagerank({0: 1.0})          # load (or compile) the kernel now

    def node_name(self, node: int) -> str:
        """Entity id, or the ``namespace:value`` of an attribute node."""
        return self._ids[node] if node < self._n else self._attributes[node - self._n]

    def seed_weights(self, request: ArmRequest) -> dict[int, float]:
        """Graph node → seed weight: 1/rank per upstream entity seed (summed over
        upstreams); ``slot_weight × score`` per slot naming attribute nodes, shared by
        the nodes whose values have the slot value's :func:`ltrr.text.normalize`."""
        weights: dict[int, float] = {}
        for s in request.seeds:
            node = self.ctx.catalog.row_of(s.entity_id)
            if node is not None:
                weights[node] = weights.get(node, 0.0) + 1.0 / max(s.rank, 1)
        spaces = self.params.slot_attributes
        for slot in request.slots:
            ns = spaces.get(slot.name)
            if ns is None or slot.entity_id is not None:
                continue
            nodes = self._attr.get((ns, normalize(slot.value)), ())
            for node in nodes:
                weights[node] = weights.get(node, 0.0) + self.params.slot_weight * max(
                    slot.score, 1e-6) / len(nodes)
        return weights

    def retrieve_batch(self, requests: list[ArmRequest]) -> list[list[Candidate]]:
        weights = [self.seed_weights(r) for r in requests]
        if self.params.mode == "embedding":
            return self._embedding(weights, [r.k for r in requests])
        return [self._ppr(w, r.k) if w and r.k > 0 else [] for w, r in zip(weights, requests)]

    def personalized_pagerank(self, weights: dict[int, float]) -> "np.ndarray":
        """Approximate personalized PageRank of every node from the weighted seeds.

        Synchronous push: in each round every node whose residual mass exceeds
        ``tolerance`` keeps ``1 - alpha`` of it as score and spreads ``alpha`` of it
        over its neighbours in proportion to edge weight; after ``iterations`` rounds
        the residual left is added as score. Work is proportional to the edges of the
        pushing nodes, not to the graph.
        """
        import numpy as np

        from ltrr_plugins.arms.ppr_kernel import push

        p = self.params
        seeds = np.fromiter(weights, dtype=np.int64, count=len(weights))
        w = np.fromiter(weights.values(), dtype=np.float64, count=len(weights))
        return push(self._indptr, self._indices, self._pdata, seeds, w, self._size,
                    p.alpha, p.tolerance, p.iterations)

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
            hop[j, indices[lo:hi]] = self._pdata[lo:hi]
        deg = self._degree[entities]
        edges = _ranges(indptr[entities], indptr[entities + 1])
        two = np.zeros((len(seeds), len(entities)))
        if len(edges):
            # P²[s, v] = sum_u P[s, u] * P[u, v], with P[u, v] read from row v (A symmetric)
            terms = hop[:, indices[edges]] * self._qdata[edges]
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
        scores = self.personalized_pagerank(weights)
        seeds = list(weights)
        ent = scores[:self._n]
        ent[[s for s in seeds if s < self._n]] = 0.0
        found = np.flatnonzero(ent > 0)
        if len(found) > k:
            found = found[np.argpartition(-ent[found], k - 1)[:k]]
        found = found[np.lexsort((found, -ent[found]))]
        best = self.attribute(weights, found).tolist()
        arm = self.ctx.node_id
        return [Candidate(self._ids[e], arm, rank, float(ent[e]),
                          seed=self.node_name(seeds[b]))
                for rank, (e, b) in enumerate(zip(found.tolist(), best), 1)]

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
            keep = [(int(e), float(x)) for e, x in zip(row_found, row_sims)
                    if e >= 0 and int(e) not in exclude][:ks[i]]
            if not keep:
                continue
            rows = np.fromiter((e for e, _ in keep), dtype=np.int64, count=len(keep))
            best = (vecs @ self._vectors[rows].T).argmax(axis=0).tolist()   # most similar seed
            out[i] = [Candidate(self._ids[e], arm, rank, x, seed=self.node_name(int(seeds[b])))
                      for rank, ((e, x), b) in enumerate(zip(keep, best), 1)]
        return out


@hookimpl
def ltrr_components():
    return [GraphArm]
