"""The ``graph`` arm on a small hand-made music graph: building, both modes, seeding,
attribution, errors and staleness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ltrr.catalog import Catalog
from ltrr.compiler import compile_spec
from ltrr.components import ComponentContext, PlanView
from ltrr.errors import CompileError, StateError
from ltrr.runtime.batch import index_plan
from ltrr.runtime.pipeline import Pipeline
from ltrr.spec import load_spec_text
from ltrr.types import ArmRequest, Candidate, Query, Slot
from ltrr_plugins.arms.graph import GraphArm, GraphParams, random_walks

GENRES = {
    "metal": ["Metallica", "Megadeth", "Slayer", "Iron Maiden"],
    "hip hop": ["Eminem", "Jay-Z", "Nas", "Kanye West"],
    "electronic": ["Daft Punk", "Justice", "Air", "Moby"],
}
NAMES = [n for names in GENRES.values() for n in names] + ["Lonely"]
ID = {name: str(i + 1) for i, name in enumerate(NAMES)}
NAME = {v: k for k, v in ID.items()}
GENRE_OF = {ID[n]: g for g, names in GENRES.items() for n in names}
VIEW = PlanView(arms=("related",), slotters=(), budget=10, output_k=10)


def write_data(folder: Path) -> None:
    """Catalog of 13 artists, tag assignments and plays, three genres and a loner."""
    pl.DataFrame({"artist_id": list(ID.values()), "name": list(ID)}).write_parquet(
        folder / "artists.parquet")
    tags = []   # (user, artist, tag)
    for g, names in GENRES.items():
        for j, name in enumerate(names):
            for u in range(3 - (j > 1)):      # the first two of a genre are tagged more
                tags.append((f"t{u}", ID[name], g))
    tags += [("t0", ID["Metallica"], "thrash"), ("t1", ID["Slayer"], "thrash"),
             ("t0", ID["Eminem"], "rap"), ("t1", ID["Nas"], "rap"),
             ("t0", ID["Jay-Z"], "Hip-Hop"), ("t1", ID["Kanye West"], "Hip-Hop"),
             ("t2", ID["Air"], "french"),         # on one artist only: dropped
             ("t0", "999", "metal")]              # not in the catalog: dropped
    pl.DataFrame(tags, schema=["user_id", "artist_id", "tag"], orient="row").write_parquet(
        folder / "tags.parquet")
    plays = []
    for g, names in GENRES.items():
        for u in range(3):
            for j, name in enumerate(names):
                plays.append((f"{g}-fan{u}", ID[name], 100 * (j + 1)))
    plays.append(("crossover", ID["Metallica"], 50))    # one listener links two genres
    plays.append(("crossover", ID["Eminem"], 50))
    pl.DataFrame(plays, schema=["user_id", "artist_id", "plays"], orient="row").write_parquet(
        folder / "plays.parquet")


RELATIONS = [
    {"kind": "bipartite", "path": "tags.parquet", "entity": "artist_id", "attribute": "tag"},
    {"kind": "co_occurrence", "path": "plays.parquet", "group": "user_id",
     "entity": "artist_id", "value": "plays", "top_n": 3},
]
# robust on this tiny graph: the checks below pass for every seed 0-9
EMBED = {"mode": "embedding", "dim": 16, "walk_length": 10, "walks_per_node": 40,
         "window": 3, "epochs": 10, "negative": 5, "seed": 7}


@pytest.fixture()
def folder(tmp_path) -> Path:
    write_data(tmp_path)
    return tmp_path


def make_arm(folder: Path, state: str = "state", **params) -> GraphArm:
    """A built and opened graph arm over the data in ``folder``."""
    params.setdefault("relations", RELATIONS)
    params.setdefault("slot_attributes", {"tag": "tag"})
    catalog = Catalog(folder / "artists.parquet", "artist_id")
    out = folder / state
    out.mkdir()
    ctx = ComponentContext("related", out, folder, lambda: catalog, VIEW)
    arm = GraphArm(GraphParams.model_validate(params), ctx)
    arm.stats = arm.build(out, lambda done, total: None)
    arm.open()
    return arm


def seeds(*names: str, arm: str = "lexical") -> list[Candidate]:
    return [Candidate(ID[n], arm, r, 1.0) for r, n in enumerate(names, 1)]


def expand(arm: GraphArm, k: int = 5, *, seeds=(), slots=()) -> list[Candidate]:
    request = ArmRequest(Query("r", "q"), k, slots=list(slots), seeds=list(seeds))
    return arm.retrieve_batch([request])[0]


@pytest.fixture(params=["ppr", "embedding"])
def arm(request, folder) -> GraphArm:
    return make_arm(folder, **(EMBED if request.param == "embedding" else {}))


def test_build_counts_nodes_and_edges_of_catalog_entities_only(folder):
    stats = make_arm(folder).stats
    tag, plays = stats["relations"]
    # metal, hip hop, electronic, thrash, rap, Hip-Hop: 'french' is on one artist only
    assert tag["attribute_nodes"] == stats["attribute_nodes"] == 6
    assert tag["rows_not_in_catalog"] == 1
    assert tag["edges"] == 12 + 6               # each artist to its genre, thrash, rap, Hip-Hop
    assert plays["rows_not_in_catalog"] == 0
    assert stats["entity_nodes"] == 13
    assert stats["isolated_entities"] == 1      # "Lonely"
    assert stats["edges"] == tag["edges"] + plays["edges"]
    assert sorted(p.name for p in (folder / "state").iterdir()) == [
        "degree.npy", "indices.npy", "indptr.npy", "inv_degree.npy", "nodes.json",
        "transition.npy", "weight.npy"]


def test_neighbours_of_a_metal_band_are_metal_bands(arm):
    out = expand(arm, 3, seeds=seeds("Metallica"))
    assert [GENRE_OF[c.entity_id] for c in out] == ["metal"] * 3
    assert {c.seed for c in out} == {ID["Metallica"]}
    assert [c.rank for c in out] == [1, 2, 3]
    assert all(c.arm == "related" for c in out)
    scores = [c.score for c in out]
    assert scores == sorted(scores, reverse=True)


def test_a_tag_slot_seeds_its_attribute_node(arm):
    slot = Slot("tag", "HIP  hop", 0, 7, 1.0)     # seeds both 'hip hop' and 'Hip-Hop'
    assert sorted(arm.node_name(n) for n in arm.seed_weights(
        ArmRequest(Query("r", "q"), 5, slots=[slot]))) == ["tag:Hip-Hop", "tag:hip hop"]
    out = expand(arm, 4, slots=[slot])
    assert sorted(NAME[c.entity_id] for c in out) == sorted(GENRES["hip hop"])
    assert {c.seed for c in out} <= {"tag:hip hop", "tag:Hip-Hop"}
    # a slot whose name is not mapped, or whose value is no attribute node, seeds nothing
    assert expand(arm, slots=[Slot("mood", "hip hop", 0, 7, 1.0)]) == []
    assert expand(arm, slots=[Slot("tag", "polka", 0, 5, 1.0)]) == []


def test_slot_values_and_attribute_nodes_share_the_slotters_normalisation(arm):
    """Accents and case fold the same way on both sides (the graph had its own key
    function without accent folding: a slot 'Électronic' missed the node 'electronic')."""
    slot = Slot("tag", "Électronic", 0, 10, 1.0)
    assert [arm.node_name(n) for n in arm.seed_weights(
        ArmRequest(Query("r", "q"), 5, slots=[slot]))] == ["tag:electronic"]


def test_seeds_are_excluded_and_candidates_credit_their_own_seed(arm):
    # two upstream nodes, each with its rank-1 seed: equal weights
    out = expand(arm, 8, seeds=seeds("Metallica") + seeds("Daft Punk", arm="understand"))
    ids = [c.entity_id for c in out]
    assert ID["Metallica"] not in ids and ID["Daft Punk"] not in ids
    for c in out:
        if GENRE_OF[c.entity_id] == "metal":
            assert c.seed == ID["Metallica"]
        elif GENRE_OF[c.entity_id] == "electronic":
            assert c.seed == ID["Daft Punk"]
    assert sorted(GENRE_OF[e] for e in ids[:6]) == ["electronic"] * 3 + ["metal"] * 3


def test_no_usable_seeds_give_an_empty_list(arm):
    assert expand(arm) == []
    assert expand(arm, seeds=[Candidate("unknown", "lexical", 1, 1.0)]) == []
    many = arm.retrieve_batch([ArmRequest(Query("a", "q"), 3),
                               ArmRequest(Query("b", "q"), 3, seeds=seeds("Nas"))])
    assert many[0] == [] and len(many[1]) == 3


def test_a_push_leaves_no_trace_for_the_next_one(folder):
    """The push reuses its scratch arrays from call to call: each query's results are
    those of a freshly opened arm, whatever ran before it."""
    first = make_arm(folder)
    alone = {name: expand(first, 8, seeds=seeds(name)) for name in ("Slayer", "Nas")}
    again = make_arm(folder, "again")
    for name in ("Nas", "Slayer", "Nas", "Slayer"):
        assert expand(again, 8, seeds=seeds(name)) == alone[name]
    resid, score, stamp, *_ = again._scratch()
    assert not resid.any() and not score.any() and not stamp.any()


def reference_push(adj, seeds: dict[int, float], alpha: float, tolerance: float,
                   iterations: int, per_edge: bool = False) -> tuple[np.ndarray, list[int]]:
    """The synchronous push written plainly: every node scanned every round. Returns
    the scores and the number of edges each round followed."""
    n = adj.shape[0]
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    resid, score = np.zeros(n), np.zeros(n)
    total = sum(seeds.values())
    for s, w in seeds.items():
        resid[s] += w / total
    active = list(seeds)
    edges = []
    for _ in range(iterations):
        if not active:
            break
        edges.append(int(sum(adj.indptr[u + 1] - adj.indptr[u] for u in active)))
        mass = [resid[u] for u in active]
        for u, m in zip(active, mass):
            score[u] += (1.0 - alpha) * m
            resid[u] = 0.0
        for u, m in zip(active, mass):
            for e in range(adj.indptr[u], adj.indptr[u + 1]):
                resid[adj.indices[e]] += alpha * m * (adj.data[e] * inv[u])
        limit = tolerance * np.maximum(np.diff(adj.indptr), 1) if per_edge else np.full(
            n, tolerance)
        active = [v for v in range(n) if resid[v] > limit[v]]
    return score + (1.0 - alpha) * resid, edges


def test_the_push_equals_a_plain_scan_whatever_the_frontier_size(tmp_path):
    """The compiled push finds each round's frontier by sorting the nodes it reached
    (a small frontier) or by scanning the graph (a large one): both give exactly the
    scores of a plain synchronous push."""
    import scipy.sparse as sp

    from ltrr_plugins.arms.graph.arm import write_csr

    rng = np.random.default_rng(5)
    n = 4000                        # a ring (slow spread) plus a few random chords
    u = np.concatenate([np.arange(n), rng.integers(0, n, 300)])
    v = np.concatenate([(np.arange(n) + 1) % n, rng.integers(0, n, 300)])
    w = rng.uniform(0.5, 2.0, len(u))
    upper = sp.csr_matrix((w, (np.minimum(u, v), np.maximum(u, v))), shape=(n, n))
    adj = (upper + upper.T).tocsr()
    adj.sort_indices()
    write_csr(tmp_path, adj)
    arm = GraphArm.__new__(GraphArm)
    arm._indptr, arm._indices = (np.load(tmp_path / f) for f in ("indptr.npy", "indices.npy"))
    arm._transition = np.load(tmp_path / "transition.npy")
    arm._size = n
    import threading

    arm._local = threading.local()
    largest = []
    for tolerance, rounds, threshold in ((1e-3, 8, "node"), (1e-7, 40, "edge"),
                                         (1e-12, 100, "node")):   # growing frontiers
        arm.params = GraphParams.model_validate({"relations": RELATIONS, "alpha": 0.85,
                                                 "tolerance": tolerance,
                                                 "iterations": rounds,
                                                 "threshold": threshold})
        seeds = {7: 1.0, 2500: 0.5}
        nodes, scores = arm.personalized_pagerank(seeds)
        want, edges = reference_push(adj, seeds, 0.85, tolerance, rounds,
                                     threshold == "edge")
        largest.append(max(edges))
        assert nodes.tolist() == np.flatnonzero(want).tolist()
        assert scores.tolist() == want[nodes].tolist()       # bit for bit
    # rounds that sorted a few nodes, and rounds that followed over n/8 edges (scanned)
    assert largest[0] * 64 < n and largest[-1] * 8 > n


def test_an_edge_threshold_keeps_a_hub_from_flooding_the_graph(tmp_path):
    """threshold: edge — a hub pushes only a mass worth its edges: seeding a leaf of a
    star of 20,000 leaves reaches a handful of nodes, not the whole star."""
    import threading

    import scipy.sparse as sp

    from ltrr_plugins.arms.graph.arm import write_csr

    n = 20_001
    upper = sp.csr_matrix((np.ones(n - 1), (np.zeros(n - 1, dtype=int), np.arange(1, n))),
                          shape=(n, n))
    adj = (upper + upper.T).tocsr()
    write_csr(tmp_path, adj)
    arm = GraphArm.__new__(GraphArm)
    arm._indptr, arm._indices, arm._transition = (
        np.load(tmp_path / f"{a}.npy") for a in ("indptr", "indices", "transition"))
    arm._size, arm._local = n, threading.local()
    reached = {}
    for threshold in ("node", "edge"):
        arm.params = GraphParams.model_validate({"relations": RELATIONS, "threshold": threshold,
                                                 "tolerance": 1e-4})
        reached[threshold] = len(arm.personalized_pagerank({5: 1.0})[0])
    assert reached == {"node": n, "edge": 2}


def test_ppr_matches_networkx_personalized_pagerank(folder):
    import networkx as nx

    arm = make_arm(folder, alpha=0.7, tolerance=1e-12, iterations=100)
    weights = arm.seed_weights(ArmRequest(Query("r", "q"), 5, seeds=seeds("Slayer", "Jay-Z")))
    assert weights == {int(ID["Slayer"]) - 1: 1.0, int(ID["Jay-Z"]) - 1: 0.5}
    nodes, scores = arm.personalized_pagerank(weights)
    ours = np.zeros(arm.adjacency().shape[0])
    ours[nodes] = scores
    graph = nx.from_scipy_sparse_array(arm.adjacency())
    total = sum(weights.values())
    ref = nx.pagerank(graph, alpha=0.7, weight="weight", tol=1e-12, max_iter=500,
                      personalization={n: w / total for n, w in weights.items()})
    assert np.allclose(ours, [ref[i] for i in range(len(ours))], atol=1e-8)

    # the arm restarts at a seed in proportion to weight × weighted degree^power
    volume = dict(graph.degree(weight="weight"))
    for power in (0.0, 1.0):
        arm.params = arm.params.model_copy(update={"seed_degree_power": power})
        got = expand(arm, 20, seeds=seeds("Slayer", "Jay-Z"))
        scaled = {n: w * volume[n] ** power for n, w in weights.items()}
        total = sum(scaled.values())
        ref = nx.pagerank(graph, alpha=0.7, weight="weight", tol=1e-12, max_iter=500,
                          personalization={n: w / total for n, w in scaled.items()})
        assert [c.score for c in got] == pytest.approx(
            [ref[int(c.entity_id) - 1] for c in got], abs=1e-8)
        assert len(got) == 6          # the two seeds' genres (4 + 4 artists) but the seeds


def test_embedding_build_is_deterministic(folder):
    a = make_arm(folder, "s1", **EMBED)
    make_arm(folder, "s2", **EMBED)
    assert np.array_equal(np.load(folder / "s1" / "vectors.npy"),
                          np.load(folder / "s2" / "vectors.npy"))
    assert a.stats["embedded_entities"] == 12            # all but the isolated one
    assert {"entities.faiss", "vectors.npy"} <= {p.name for p in (folder / "s1").iterdir()}


def test_random_walks_follow_edges_deterministically():
    import scipy.sparse as sp

    adj = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 9, 0], [0, 9, 0, 0], [0, 0, 0, 0.]]))
    walks = random_walks(adj.indptr, adj.indices, adj.data, 6, 50, seed=3)
    assert walks.shape == (150, 6)                        # node 3 is isolated: no walks
    assert np.array_equal(walks, random_walks(adj.indptr, adj.indices, adj.data, 6, 50, 3))
    steps = set(zip(walks[:, :-1].ravel().tolist(), walks[:, 1:].ravel().tolist()))
    assert steps <= {(0, 1), (1, 0), (1, 2), (2, 1)}
    after_1 = walks[:, 1:][walks[:, :-1] == 1]
    assert (after_1 == 2).mean() > 0.8                    # weight 9 against 1


# ---- through the spec, `ltrr index` and the pipeline

def spec_text(relations: str, extra: str = "") -> str:
    return f"""
name: g
catalog: {{path: artists.parquet, id: artist_id, title: name}}
slotters:
  - id: understand
    use: dictionary
    with: {{slots: {{tag: {{column: tags}}, artist: {{column: name, entity: true}}}}}}
arms:
  - id: related
    use: graph
    from: [understand]
    with:
      relations: {relations}
      slot_attributes: {{tag: tag}}
      {extra}
policy: {{budget: 5}}
output: {{k: 5}}
"""


TAGS = "{kind: bipartite, path: tags.parquet, entity: artist_id, attribute: tag}"
PLAYS = ("{kind: co_occurrence, path: plays.parquet, group: user_id, entity: artist_id, "
         "value: plays, top_n: 3}")


def plan(folder: Path, text: str):
    return compile_spec(load_spec_text(text, folder / "g.yaml"))


@pytest.fixture()
def spec_folder(folder) -> Path:
    cat = pl.read_parquet(folder / "artists.parquet")
    cat.with_columns(tags=pl.Series([[GENRE_OF.get(i, "none")] for i in cat["artist_id"]])
                     ).write_parquet(folder / "artists.parquet")
    return folder


def test_pipeline_expands_the_artist_the_slotter_found(spec_folder):
    p = plan(spec_folder, spec_text(f"[{TAGS}, {PLAYS}]"))
    stats = index_plan(p)["related"]
    assert stats["entity_nodes"] == 13 and stats["edges"] > 0
    with Pipeline(p, log_decisions=False) as pipe:
        d = pipe.run(Query("r", "like megadeth"))
    found = d.candidates["related"]
    assert [GENRE_OF[c.entity_id] for c in found[:3]] == ["metal"] * 3
    assert ID["Megadeth"] not in [c.entity_id for c in found]
    assert {c.seed for c in found[:3]} == {ID["Megadeth"]}


def test_a_missing_column_names_the_node_and_field(spec_folder):
    bad = TAGS.replace("attribute: tag", "attribute: label, namespace: tag")
    with pytest.raises(StateError) as err:
        index_plan(plan(spec_folder, spec_text(f"[{PLAYS}, {bad}]")))
    e = err.value
    assert (e.node, e.field) == ("related", "with.relations.1.attribute")
    assert "no column 'label'" in e.message and "artist_id" in e.hint


def test_a_missing_relation_file_names_the_field(spec_folder):
    with pytest.raises(StateError) as err:
        index_plan(plan(spec_folder, spec_text(f"[{TAGS.replace('tags.', 'nope.')}]")))
    assert (err.value.node, err.value.field) == ("related", "with.relations.0.path")


def test_relations_linking_no_catalog_entity_are_an_error(spec_folder):
    bad = TAGS.replace("entity: artist_id", "entity: user_id")
    with pytest.raises(StateError, match="no edges") as err:
        index_plan(plan(spec_folder, spec_text(f"[{bad}]")))
    assert err.value.field == "with.relations"


def test_the_index_is_stale_when_a_relation_file_changes(spec_folder):
    p = plan(spec_folder, spec_text(f"[{TAGS}, {PLAYS}]"))
    index_plan(p)
    Pipeline(p, log_decisions=False).close()
    tags = pl.read_parquet(spec_folder / "tags.parquet")
    tags.vstack(tags.head(1)).write_parquet(spec_folder / "tags.parquet")
    with pytest.raises(StateError, match="stale") as err:
        Pipeline(p, log_decisions=False)
    assert err.value.node == "related"
    assert index_plan(p)["related"] is not None          # rebuilt
    Pipeline(p, log_decisions=False).close()
    # a query-time param does not invalidate it; the mode does
    assert index_plan(plan(spec_folder, spec_text(f"[{TAGS}, {PLAYS}]", "alpha: 0.3"))) == {
        "understand": None, "related": None}
    embedding = "mode: embedding\n      dim: 8\n      walks_per_node: 2"
    stats = index_plan(plan(spec_folder, spec_text(f"[{TAGS}, {PLAYS}]", embedding)))
    assert stats["related"]["embedded_entities"] == 12


def test_compile_checks_slot_namespaces(spec_folder):
    text = spec_text(f"[{TAGS}]").replace("slot_attributes: {tag: tag}",
                                          "slot_attributes: {tag: genre}")
    with pytest.raises(CompileError, match="namespace 'genre'"):
        plan(spec_folder, text)
    twice = f"[{TAGS}, {TAGS}]"
    with pytest.raises(CompileError, match="already used"):
        plan(spec_folder, spec_text(twice))
