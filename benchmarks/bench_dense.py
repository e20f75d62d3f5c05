"""Dense arm: query latency on SciFact, HNSW search on 100k vectors, corpus encoding speed.

* single-query latency of ``DenseArm.retrieve_batch([one request])`` on the opened
  ``pipelines/scifact-dense.yaml`` pipeline (query encoding + faiss flat search over
  5,183 abstracts), k = 100, over the SciFact queries (after warm-up); interleaved
  query by query with the baselines ``encoder.encode([text])`` alone and the faiss
  search alone. Also the whole pipeline (``Pipeline.run``).
* HNSW search, k = 10, the arm's default parameters (M 32, efConstruction 200,
  efSearch 128), one query at a time: over 100k random unit vectors of dimension 384
  (the worst case for a graph index: no structure, so recall is low), and over the
  real SciFact vectors with the real query vectors. Baseline: exact flat search of
  the same queries, in alternating blocks of all queries (3 rounds after a warm-up
  round); recall@10 against it.
* corpus encoding: the first ``--encode-docs`` SciFact abstracts (title + text,
  ``0`` = all 5,183) encoded by each backend of the ``sentence`` encoder (torch is
  the baseline), one after the other; docs/s, the extrapolated full-corpus time and
  the cosine of each backend's vectors to torch's.

Targets: arm single-query p50 < 15 ms; HNSW p50 < 1 ms over 100k vectors.

    .venv/bin/python benchmarks/bench_dense.py [--queries 300] [--encode-docs 1000] [--out FILE]
"""

from __future__ import annotations

import gzip
import json
import sys
from time import perf_counter

import _common as c

ARM_TARGET_MS = 15.0
HNSW_TARGET_MS = 1.0
K = 100
DATA = c.SHARED_DATA / "beir-scifact"
SPEC = c.ROOT / "pipelines" / "scifact-dense.yaml"
FILES = ("corpus.jsonl.gz", "queries.jsonl.gz")


def hnsw_latency(vectors, queries, *, m: int, ef_construction: int, ef_search: int,
                 k: int = 10, rounds: int = 3) -> dict:
    """Build HNSW and flat IP indexes over ``vectors``; time single-query searches."""
    import faiss
    import numpy as np

    dim = vectors.shape[1]
    t = perf_counter()
    hnsw = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = ef_construction
    hnsw.add(vectors)
    build_s = perf_counter() - t
    hnsw.hnsw.efSearch = ef_search
    flat = faiss.IndexFlatIP(dim)
    flat.add(vectors)
    # blocks, not query-by-query interleaving: a flat scan of 100k x 384 floats (150 MB)
    # between two HNSW searches would evict the graph from the caches every time
    singles = [np.ascontiguousarray(q[None, :]) for q in queries]
    h_ms, f_ms, got, exact = [], [], [], []
    for rnd in range(rounds + 1):                   # round 0 is the warm-up
        for which in ((0, 1) if rnd % 2 == 0 else (1, 0)):
            index, times, found = (hnsw, h_ms, got) if which == 0 else (flat, f_ms, exact)
            for q in singles:
                t = perf_counter()
                _, ids = index.search(q, k)
                if rnd:
                    times.append((perf_counter() - t) * 1000.0)
                    if rnd == 1:
                        found.append(set(ids[0].tolist()))
    recall = [len(a & b) / k for a, b in zip(got, exact)]
    return {"vectors": int(vectors.shape[0]), "build_s": round(build_s, 2),
            "hnsw_ms": c.summary(h_ms), "flat_ms": c.summary(f_ms),
            "recall_at_10": round(sum(recall) / len(recall), 4), "_h": h_ms, "_f": f_ms}


def encode_speed(texts: list[str], backends: list[str], folder) -> dict:
    """Encode ``texts`` with each backend (fresh encoder, model loaded before timing)."""
    import numpy as np

    from ltrr.components import ComponentContext, PlanView
    from ltrr_plugins.encoders.sentence import SentenceEncoder, SentenceParams

    out, ref = {}, None
    for backend in backends:
        ctx = ComponentContext("bench", folder / "bench", folder, lambda: None,
                               PlanView((), (), 1, 1))
        enc = SentenceEncoder(SentenceParams(backend=backend, batch_size=32), ctx)
        enc.open()
        t = perf_counter()
        enc.dim                                      # load (and export once) untimed
        load_s = perf_counter() - t
        c.log(f"encoding {len(texts)} abstracts with backend {backend}")
        t = perf_counter()
        vectors = enc.encode(texts)
        seconds = perf_counter() - t
        if ref is None:
            ref = vectors
        cos = (vectors * ref).sum(axis=1)
        out[backend] = {"seconds": round(seconds, 2), "docs_per_s": round(len(texts) / seconds, 2),
                        "load_s": round(load_s, 2), "cos_to_first_min": round(float(cos.min()), 5),
                        "cos_to_first_mean": round(float(np.mean(cos)), 5)}
        enc.close()
    return out


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=300, help="timed single queries")
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--random-vectors", type=int, default=100_000)
    p.add_argument("--encode-docs", type=int, default=1000,
                   help="abstracts encoded per backend (0 = the whole corpus)")
    p.add_argument("--backends", default="torch,onnx,onnx-int8")
    args = p.parse_args()
    started = perf_counter()
    title = "Dense arm (MiniLM + faiss) on SciFact; HNSW on 100k vectors"

    missing = [f for f in FILES if not (DATA / f).is_file()]
    if missing:
        reason = (f"SKIPPED: BEIR SciFact data not found at {DATA} (missing: "
                  f"{', '.join(missing)})")
        c.log(reason)
        metrics = [c.metric("dense arm single query (p50)", None, "ms",
                            target=f"< {ARM_TARGET_MS} ms", note="skipped")]
        c.emit(c.result("dense", title, metrics, started=started, skipped=True, reason=reason),
               args.out)
        return 0

    import numpy as np

    from ltrr.compiler import load_plan
    from ltrr.runtime.batch import index_plan
    from ltrr.runtime.pipeline import Pipeline, new_request_id
    from ltrr.types import ArmRequest, Query

    plan = load_plan(SPEC)
    c.log("indexing pipelines/scifact-dense.yaml (a no-op when current)")
    t = perf_counter()
    built = {k: v for k, v in index_plan(plan).items() if v is not None}
    index_s = perf_counter() - t
    queries = [json.loads(line)["text"] for line in gzip.open(DATA / "queries.jsonl.gz", "rt")]
    timed = queries[args.warmup:args.warmup + args.queries]

    with Pipeline(plan, log_decisions=False) as pipeline:
        arm = pipeline.components["dense"]
        enc, index = arm._enc, arm._index
        c.log(f"warm-up: {args.warmup} queries")
        for q in queries[:args.warmup]:
            arm.retrieve_batch([ArmRequest(Query(new_request_id(), q), K)])
            pipeline.run(Query(new_request_id(), q))
        c.log(f"single-query latency: {len(timed)} queries; arm, encoder, faiss, pipeline")
        arm_ms, enc_ms, faiss_ms, pipe_ms = [], [], [], []
        for i, q in enumerate(timed):
            req = [ArmRequest(Query(new_request_id(), q), K)]
            order = [0, 1, 2, 3] if i % 2 == 0 else [3, 2, 1, 0]
            for which in order:
                t = perf_counter()
                if which == 0:
                    arm.retrieve_batch(req)
                    arm_ms.append((perf_counter() - t) * 1000.0)
                elif which == 1:
                    vec = enc.encode([q])
                    enc_ms.append((perf_counter() - t) * 1000.0)
                elif which == 2:
                    qv = enc.encode([q])
                    t = perf_counter()
                    index.search(qv, K)
                    faiss_ms.append((perf_counter() - t) * 1000.0)
                else:
                    pipeline.run(Query(new_request_id(), q))
                    pipe_ms.append((perf_counter() - t) * 1000.0)
        c.log("batch: one retrieve_batch of all timed queries")
        t = perf_counter()
        arm.retrieve_batch([ArmRequest(Query(new_request_id(), q), K) for q in timed])
        batch_qps = len(timed) / (perf_counter() - t)
        real = np.ascontiguousarray(arm._vectors, dtype=np.float32)
        real_q = enc.encode(timed)
        backend = enc.params.backend
    del vec

    c.log("HNSW over the real SciFact vectors")
    real_h = hnsw_latency(real, real_q, m=32, ef_construction=200, ef_search=128)
    c.log(f"HNSW over {args.random_vectors} random unit vectors (dim 384): building")
    rng = np.random.default_rng(args.seed)
    rand = rng.standard_normal((args.random_vectors, 384), dtype=np.float32)
    rand /= np.linalg.norm(rand, axis=1, keepdims=True)
    rq = rng.standard_normal((len(timed) * 2, 384), dtype=np.float32)
    rq /= np.linalg.norm(rq, axis=1, keepdims=True)
    rand_h = hnsw_latency(rand, rq, m=32, ef_construction=200, ef_search=128)

    corpus = [json.loads(line) for line in gzip.open(DATA / "corpus.jsonl.gz", "rt")]
    texts = [f"{d['title']} {d['text']}".strip() for d in corpus]
    if args.encode_docs:
        texts = texts[:args.encode_docs]
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        enc_speed = encode_speed(texts, [b for b in args.backends.split(",") if b], Path(tmp))

    a50, e50, f50, p50 = (c.median(x) for x in (arm_ms, enc_ms, faiss_ms, pipe_ms))
    rh50, rf50 = c.median(rand_h["_h"]), c.median(rand_h["_f"])
    sh50, sf50 = c.median(real_h["_h"]), c.median(real_h["_f"])
    metrics = [
        c.metric(f"dense arm single query k={K}, encoding included (p50)", a50, "ms",
                 target=f"< {ARM_TARGET_MS} ms", passed=a50 < ARM_TARGET_MS, baseline=e50,
                 baseline_name="encoder.encode([query]) p50",
                 note=f"backend {backend}; faiss flat p50 {f50:.3f} ms; p95 "
                      f"{c.percentile(arm_ms, 95):.2f} ms"),
        c.metric("scifact-dense pipeline single query (p50)", p50, "ms", baseline=a50,
                 baseline_name="dense arm p50"),
        c.metric(f"dense arm batch of {len(timed)} throughput", batch_qps, "q/s",
                 baseline=1000.0 / a50, baseline_name="1 / single-query p50", digits=1),
        c.metric(f"HNSW search k=10 over {rand_h['vectors']:,} random unit vectors (p50)",
                 rh50, "ms", target=f"< {HNSW_TARGET_MS} ms", passed=rh50 < HNSW_TARGET_MS,
                 baseline=rf50, baseline_name="flat exact search p50",
                 note=f"recall@10 {rand_h['recall_at_10']:.3f}; build "
                      f"{rand_h['build_s']:.0f} s; M 32, efC 200, efS 128"),
        c.metric(f"HNSW search k=10 over SciFact ({real_h['vectors']:,} vectors, p50)", sh50,
                 "ms", target=f"< {HNSW_TARGET_MS} ms", passed=sh50 < HNSW_TARGET_MS,
                 baseline=sf50, baseline_name="flat exact search p50",
                 note=f"recall@10 {real_h['recall_at_10']:.3f}"),
    ]
    base = enc_speed.get("torch")
    n_docs = len(texts)
    for name, s in enc_speed.items():
        full = 5183 / s["docs_per_s"]
        metrics.append(c.metric(
            f"encode {n_docs} SciFact abstracts, backend {name}", s["seconds"], "s",
            baseline=None if base is None or name == "torch" else base["seconds"],
            baseline_name=None if base is None or name == "torch" else "torch backend",
            note=f"{s['docs_per_s']:.1f} docs/s, full corpus ≈ {full:.0f} s; cosine to "
                 f"{next(iter(enc_speed))} ≥ {s['cos_to_first_min']:.4f}", digits=2))
    for h in (real_h, rand_h):
        h.pop("_h")
        h.pop("_f")
    details = {
        "k": K, "queries": len(timed), "warmup": args.warmup, "backend": backend,
        "arm_ms": c.summary(arm_ms), "encode_ms": c.summary(enc_ms),
        "faiss_flat_ms": c.summary(faiss_ms), "pipeline_ms": c.summary(pipe_ms),
        "hnsw_random": rand_h, "hnsw_scifact": real_h, "encoding": enc_speed,
        "encode_docs": n_docs, "index": {"built": built, "seconds": round(index_s, 2)},
    }
    c.emit(c.result("dense", title, metrics, details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
