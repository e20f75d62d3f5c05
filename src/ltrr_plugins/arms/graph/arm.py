"""The ``graph`` arm: its params, index build and query path; the relations, PPR and
DeepWalk parts live in the modules beside it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from ltrr import extras
from ltrr.components import Arm, Indexed, Params, PlanView, Problem, TableUse
from ltrr.errors import StateError
from ltrr.hookspecs import hookimpl
from ltrr.text import normalize
from ltrr.types import ArmRequest, Candidate
from ltrr_plugins.arms.graph.deepwalk import DeepWalk
from ltrr_plugins.arms.graph.ppr import PersonalizedPageRank
from ltrr.files import content_digest
from ltrr_plugins.arms.graph.relations import (BipartiteRelation, LinkRelation, Relation,
                                               RelationReader, _namespace, relation_table)

FORMAT = 3          # bump when the files written by build() change shape

#: The adjacency's CSR arrays, one ``.npy`` each, memory-mapped by ``open``.
ARRAYS = ("indptr", "indices", "weight", "transition", "degree", "inv_degree")

Mode = Literal["ppr", "embedding"]


def _relation_key(rel: Relation) -> dict[str, Any]:
    """What a relation says, for the index fingerprint: not where its file is, and no
    param still at a default that older indexes were built without."""
    key = rel.model_dump(mode="json", exclude={"path", "format"})
    if key.get("separator") is None:
        key.pop("separator", None)
    return key


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
    threshold: Literal["node", "edge"] = Field("node", description=(
        "ppr: node — a node pushes while its residual exceeds `tolerance`; edge — while "
        "it exceeds `tolerance` × its number of edges, so a hub pushes only a mass worth "
        "its many edges (Andersen, Chung & Lang's local push). With `edge` the work per "
        "query is bounded whatever the graph's size (take a smaller tolerance, ~1e-5); "
        "with `node` a seed near hubs reaches much of a large graph."))
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


class GraphArm(RelationReader, PersonalizedPageRank, DeepWalk, Arm, Indexed):
    """Related entities by graph expansion from seeds (personalized PageRank or DeepWalk)."""

    name = "graph"
    requires = extras.GRAPH
    reads_user = False
    Params = GraphParams
    seed_types = frozenset({"candidates", "slots"})

    # ---- compile time

    @classmethod
    def tables(cls, params: GraphParams) -> list[TableUse]:
        return [relation_table(rel, ("relations", i)) for i, rel in enumerate(params.relations)]

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

    def state_key(self) -> dict[str, Any]:
        p = self.params
        key: dict[str, Any] = {
            "format": FORMAT, "mode": p.mode,
            # what the relations say, and their files' content — not where the files
            # are: a copied spec and its data keep their index
            "relations": [_relation_key(r) for r in p.relations],
            "files": [content_digest(self._relation_file(i, r))
                      for i, r in enumerate(p.relations)],
        }
        if p.mode == "embedding":
            key["embedding"] = {f: getattr(p, f) for f in (
                "dim", "walk_length", "walks_per_node", "window", "epochs", "negative",
                "workers", "seed")}
        return key

    def _between_types(self, u, v) -> dict[str, Any]:
        """On a typed catalog, how many links join each pair of types ("artist–station")."""
        import numpy as np

        catalog = self.ctx.whole_catalog
        if not catalog.typed:
            return {}
        kinds = catalog.frame[catalog.type_column].cast(str).to_numpy().astype(str)
        a, b = kinds[u], kinds[v]
        first = a <= b
        pairs, counts = np.unique(np.char.add(np.char.add(np.where(first, a, b), "–"),
                                              np.where(first, b, a)), return_counts=True)
        return {"between_types": {str(k): int(n) for k, n in zip(pairs, counts)}}

    def build(self, out_dir: Path, progress: Callable[[int, int], None]) -> dict[str, Any]:
        import numpy as np
        import polars as pl
        import scipy.sparse as sp
        from scipy.sparse.csgraph import connected_components

        p = self.params
        started = time.perf_counter()
        total = 100
        ids = self.ctx.whole_catalog.ids
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
            elif isinstance(rel, LinkRelation):
                u, v, w, dropped = self._link(i, rel, entities)
                parts.append((u, v, w))
                stats["relations"].append({"kind": rel.kind, "edges": len(w),
                                           "rows_not_in_catalog": dropped,
                                           **self._between_types(u, v)})
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
                                  f"ids (column '{self.ctx.whole_catalog.id_column}')")
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
        write_csr(out_dir, adj)
        (out_dir / "nodes.json").write_text(json.dumps(
            {"entities": n, "attributes": attributes}, ensure_ascii=False))
        progress(35, total)
        if p.mode == "embedding":
            stats.update(self._embed(adj, n, out_dir, lambda f: progress(35 + int(60 * f),
                                                                           total)))
        progress(total, total)
        return stats

    def open(self) -> None:
        import threading

        import numpy as np

        state = self.ctx.state_dir
        embedding = self.params.mode == "embedding"
        try:
            # mapped, not loaded: open costs the same at any size, pages are read on
            # first use and shared by every process serving the same index
            arrays = {a: np.load(state / f"{a}.npy", mmap_mode="r") for a in ARRAYS}
            nodes = json.loads((state / "nodes.json").read_text())
            if embedding:
                import faiss

                self._vectors = np.load(state / "vectors.npy", mmap_mode="r")
                self._index = faiss.read_index(str(state / "entities.faiss"))
            self._n = int(nodes["entities"])
            self._attributes: list[str] = nodes["attributes"]
            size = len(arrays["indptr"]) - 1
            if size != self._n + len(self._attributes) or self._n != len(
                    self.ctx.whole_catalog) or (embedding and len(self._vectors) != size) \
                    or len(arrays["indices"]) != arrays["indptr"][-1]:
                raise ValueError("node counts of its files disagree")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise StateError(f"graph index in {state} is unreadable: {exc}",
                             node=self.ctx.node_id,
                             hint="rebuild it with `ltrr index --force`") from exc
        self._attr: dict[tuple[str, str], list[int]] = {}   # (namespace, key) → nodes
        for j, name in enumerate(self._attributes):
            ns, _, value = name.partition(":")
            self._attr.setdefault((ns, normalize(value)), []).append(self._n + j)
        self._id_at = self.ctx.whole_catalog.id_at          # row → id, mapped at scale
        # an arm of some entity types expands from any entity but returns only those
        self._allowed = None
        if self.ctx.types:
            whole = self.ctx.whole_catalog
            self._allowed = whole.frame[whole.type_column].cast(str).is_in(
                list(self.ctx.types)).to_numpy()
        # the random walk's transition matrix P = D^-1 A: P[u, v] = weight(u, v) / d_u
        self._indptr, self._indices = arrays["indptr"], arrays["indices"]
        self._weight, self._inv_degree = arrays["weight"], arrays["inv_degree"]
        self._transition = arrays["transition"]
        self._volume = arrays["degree"]                             # weighted degree
        self._degree = np.diff(self._indptr)                        # number of edges
        self._size = size
        self._local = threading.local()                             # push scratch arrays
        if embedding:
            self._index.search(np.ascontiguousarray(self._vectors[:1]), 1)   # warm up
        elif self._size:
            self.personalized_pagerank({0: 1.0})          # load (or compile) the kernel now

    def adjacency(self):
        """The symmetric weighted adjacency as a scipy CSR matrix over the mapped arrays."""
        import scipy.sparse as sp

        return sp.csr_matrix((self._weight, self._indices, self._indptr),
                             shape=(self._size, self._size), copy=False)

    def node_name(self, node: int) -> str:
        """Entity id, or the ``namespace:value`` of an attribute node."""
        return self._id_at(node) if node < self._n else self._attributes[node - self._n]

    def seed_weights(self, request: ArmRequest) -> dict[int, float]:
        """Graph node → seed weight: 1/rank per upstream entity seed (summed over
        upstreams); ``slot_weight × score`` per slot naming attribute nodes, shared by
        the nodes whose values have the slot value's :func:`ltrr.text.normalize`."""
        weights: dict[int, float] = {}
        for s in request.seeds:
            node = self.ctx.whole_catalog.row_of(s.entity_id)
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


def write_csr(out_dir: Path, adj) -> None:
    """Write the adjacency's CSR arrays (:data:`ARRAYS`) for ``open`` to map: column
    indices as int32 while they fit, the weighted degree and its inverse (0 for an
    isolated node), and the random walk's transition probabilities P[u, v] = weight /
    degree(u) in CSR order, computed once here."""
    import numpy as np

    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    small = adj.shape[0] < 2 ** 31
    arrays = {"indptr": adj.indptr.astype(np.int64),
              "indices": adj.indices.astype(np.int32 if small else np.int64),
              "weight": adj.data.astype(np.float64), "degree": degree, "inv_degree": inv,
              "transition": adj.data * np.repeat(inv, np.diff(adj.indptr))}
    for name in ARRAYS:
        np.save(out_dir / f"{name}.npy", arrays[name])


@hookimpl
def ltrr_components():
    return [GraphArm]
