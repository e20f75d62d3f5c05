"""Approximate dense indexes against exact search, on the 17,632-artist catalog the session
already encoded (the embeddings come from the music pipeline's cache, not re-encoded).

HNSW and IVF-PQ must find most of what exact search finds, and their query-time knobs
(``ef_search``, ``nprobe``) must reach faiss: more search, more recall.
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from ltrr.compiler import load_plan
from ltrr.runtime.batch import index_plan
from ltrr.runtime.pipeline import Pipeline
from ltrr.types import ArmRequest, Query

K = 10


@pytest.fixture(scope="module")
def variants(music_spec, tmp_path_factory):
    """index spec → an opened ``semantic`` arm built with it, from the cached embeddings."""
    music = yaml.safe_load(music_spec.read_text())
    semantic = next(a for a in music["arms"] if a["id"] == "semantic")
    cache = music_spec.parent / "state" / "semantic.cache"
    assert any(cache.glob("embeddings-*.npy")), "the music pipeline's embeddings are cached"
    opened: dict[str, Pipeline] = {}
    folders: dict[str, object] = {}

    def arm(index: dict):
        key = yaml.safe_dump(index)
        if key not in opened:
            # query-time knobs share the built index: one folder per build
            build = yaml.safe_dump({k: v for k, v in index.items()
                                    if k not in ("ef_search", "nprobe", "refine")})
            if build not in folders:
                folders[build] = tmp_path_factory.mktemp("dense")
                shutil.copytree(cache, folders[build] / "state" / "semantic.cache")
                # and the encoder's one-off ONNX export (8 s each in a subprocess)
                for enc in music["encoders"]:
                    done = music_spec.parent / "state" / f"{enc['id']}.cache"
                    if done.is_dir():
                        shutil.copytree(done, folders[build] / "state" / done.name)
            folder = folders[build]
            data = {"name": "recall", "catalog": music["catalog"],
                    "encoders": music["encoders"],
                    "arms": [{**semantic, "deadline_ms": 600_000,
                              "with": {**semantic["with"], "index": index}}],
                    "policy": {"budget": K, "with": {"allocation": {"semantic": K}}},
                    "output": {"k": K}, "log": {"decisions": False},
                    "state_dir": str(folder / "state")}
            spec = folder / f"recall-{len(opened)}.yaml"
            spec.write_text(yaml.safe_dump(data, sort_keys=False))
            plan = load_plan(spec)
            stats = index_plan(plan)
            assert "encoded" not in str(stats), stats        # reused, not re-encoded
            opened[key] = Pipeline(plan, log_decisions=False)
        return opened[key].components["semantic"]

    yield arm
    for p in opened.values():
        p.close()


@pytest.fixture(scope="module")
def queries(music_spec):
    """200 queries unlike the indexed texts: tag pairs and lowercased names with a tag."""
    import polars as pl

    music = yaml.safe_load(music_spec.read_text())
    cat = pl.read_parquet(music["catalog"]["path"])
    rows = cat.sample(200, seed=11).rows(named=True)
    out = []
    for i, r in enumerate(rows):
        tags = list(r.get("tags") or []) + ["music"]
        text = f"{tags[0]} {tags[-1]}" if i % 2 else f"{r['name'].lower()} {tags[0]}"
        out.append(Query(f"q{i}", text))
    return out


def _hits(arm, queries) -> list[set[str]]:
    found = arm.retrieve_batch([ArmRequest(q, K, []) for q in queries])
    return [{c.entity_id for c in cands} for cands in found]


def _recall(got: list[set[str]], exact: list[set[str]]) -> float:
    return sum(len(g & e) for g, e in zip(got, exact)) / sum(len(e) for e in exact)


HNSW = {"type": "hnsw", "m": 16, "ef_construction": 64}
IVFPQ = {"type": "ivfpq", "nlist": 64, "m": 48, "nbits": 8}


def test_hnsw_and_ivfpq_recall_against_exact_search(variants, queries):
    """Recall@10 of the approximate indexes against flat (exact) search, and their
    query-time knobs. Before: `ef_search` below k was used as is (the docs said at least k
    is used: ef_search 1 found 22% of the exact top 10), and IVF-PQ returned its quantized
    scores (56% at nprobe 16); now the shortlist is re-scored exactly (`refine`, 83%)."""
    exact = _hits(variants({"type": "flat"}), queries)
    assert all(len(e) == K for e in exact)

    def recall(index: dict) -> float:
        return _recall(_hits(variants(index), queries), exact)

    got = {"hnsw ef 128": recall({**HNSW, "ef_search": 128}),
           "hnsw ef 1": recall({**HNSW, "ef_search": 1}),
           "hnsw ef 10": recall({**HNSW, "ef_search": 10}),
           "ivfpq nprobe 16": recall({**IVFPQ, "nprobe": 16}),
           "ivfpq nprobe 1": recall({**IVFPQ, "nprobe": 1}),
           "ivfpq no refine": recall({**IVFPQ, "nprobe": 16, "refine": 1})}
    print(got)
    # measured 0.957 and 0.83 (HNSW's parallel build is not bit-reproducible: margins)
    assert got["hnsw ef 128"] >= 0.93, got
    assert got["ivfpq nprobe 16"] >= 0.75, got
    # the knobs reach faiss: searching less finds less; ef_search is at least k
    assert got["hnsw ef 1"] == got["hnsw ef 10"] < got["hnsw ef 128"], got
    assert got["ivfpq nprobe 1"] < got["ivfpq nprobe 16"] - 0.05, got
    assert got["ivfpq no refine"] < got["ivfpq nprobe 16"] - 0.1, got
