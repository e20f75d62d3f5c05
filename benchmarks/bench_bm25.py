"""BM25 arm latency and throughput on the music catalog (17,632 artists), k = 100.

* single-query latency, 1000 queries (after 200 warm-up queries, so the JVM has
  compiled the hot paths), measured two ways, interleaved query by query so that
  machine noise hits both alike:
    - arm: ``Bm25Arm.retrieve_batch([one ArmRequest])`` on the component the opened
      music pipeline holds (fields and boosts of the spec: name^3, tag_text^1);
    - direct: ``FieldedSearcher.search(text, 100, fields)`` on a second searcher over
      the same index, the baseline: arm / direct is what the arm wrapper costs.
* batch throughput, 3 repetitions, the four variants in a rotating order each time
  (medians): one ``retrieve_batch`` call with the 1000 requests (the spec's ``threads``
  setting) against the same 1000 requests one ``retrieve_batch([request])`` call at a
  time; ``FieldedSearcher.search_batch`` of the 1000 texts on 2 threads against the same
  on 1 thread. Two threads can only gain where their work overlaps: Lucene's search
  itself runs unlocked, building the query and reading the hits hold the module's
  pyjnius lock (``src/ltrr_plugins/arms/lucene/jvm.py``), so the speed-up is bounded by the share of
  time spent inside Lucene.
* a bare pyjnius call (``System.nanoTime()``) gives the Python→Java bridge floor.

Target: arm single-query p50 < 2 ms.

    .venv/bin/python benchmarks/bench_bm25.py [--queries 1000] [--out FILE]
"""

from __future__ import annotations

import sys
from time import perf_counter

import _common as c

TARGET_MS = 2.0
K = 100


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3, help="batch throughput repetitions")
    args = p.parse_args()
    started = perf_counter()

    from ltrr.compiler import load_plan
    from ltrr.runtime.pipeline import Pipeline, new_request_id
    from ltrr.types import ArmRequest, Query
    from ltrr_plugins.arms.lucene import FieldedSearcher, start_jvm

    plan = load_plan(c.MUSIC_SPEC)
    index = c.ensure_music_index(plan)
    node = next(n for n in plan.arms if n.registration.name == "bm25")
    params = node.params
    fields = None if params.flat else dict(params.fields)

    with Pipeline(plan, log_decisions=False) as pipeline:
        arm = pipeline.components[node.id]
        searcher = FieldedSearcher(arm.ctx.state_dir / "lucene", k1=params.k1, b=params.b)
        try:
            texts = c.music_queries(pipeline.catalog, args.warmup + args.queries, args.seed + 1)
            warm, timed = texts[:args.warmup], texts[args.warmup:]
            requests = [ArmRequest(Query(new_request_id(), q), K) for q in timed]

            c.log(f"warm-up: {len(warm)} queries, both paths")
            for q in warm:
                arm.retrieve_batch([ArmRequest(Query(new_request_id(), q), K)])
                searcher.search(q, K, fields)

            c.log(f"single-query latency: {len(timed)} queries, arm and direct interleaved")
            arm_ms, direct_ms, hits = [], [], []
            for i, (q, req) in enumerate(zip(timed, requests)):
                order = (0, 1) if i % 2 == 0 else (1, 0)   # alternate who goes first
                for which in order:
                    if which == 0:
                        t = perf_counter()
                        out = arm.retrieve_batch([req])
                        arm_ms.append((perf_counter() - t) * 1000.0)
                        hits.append(len(out[0]))
                    else:
                        t = perf_counter()
                        searcher.search(q, K, fields)
                        direct_ms.append((perf_counter() - t) * 1000.0)

            c.log("bridge floor: 2000 bare pyjnius static calls")
            from jnius import autoclass

            start_jvm()
            System = autoclass("java.lang.System")
            bridge = []
            for _ in range(2000):
                t = perf_counter()
                System.nanoTime()
                bridge.append((perf_counter() - t) * 1000.0)

            c.log(f"batch throughput: {args.repeats} repetitions of 4 variants over "
                  f"{len(requests)} queries")
            qps: dict[str, list[float]] = {"arm_batch": [], "arm_one_by_one": [],
                                           "search_batch_1": [], "search_batch_2": []}

            def arm_batch() -> None:
                assert len(arm.retrieve_batch(requests)) == len(requests)

            def arm_one_by_one() -> None:
                for req in requests:
                    arm.retrieve_batch([req])

            variants = {"arm_batch": arm_batch, "arm_one_by_one": arm_one_by_one,
                        "search_batch_1": lambda: searcher.search_batch(timed, K, fields,
                                                                        threads=1),
                        "search_batch_2": lambda: searcher.search_batch(timed, K, fields,
                                                                        threads=2)}
            names = list(variants)
            for rep in range(args.repeats):
                for name in names[rep % 4:] + names[:rep % 4]:
                    t = perf_counter()
                    variants[name]()
                    qps[name].append(len(requests) / (perf_counter() - t))
        finally:
            searcher.close()

    a50, a95 = c.median(arm_ms), c.percentile(arm_ms, 95)
    d50, d95 = c.median(direct_ms), c.percentile(direct_ms, 95)
    metrics = [
        c.metric(f"bm25 arm single query k={K} (p50)", a50, "ms", target=f"< {TARGET_MS} ms",
                 passed=a50 < TARGET_MS, baseline=d50, baseline_name="FieldedSearcher.search p50",
                 note=f"p95 {a95:.3f} ms"),
        c.metric(f"bm25 arm single query k={K} (p95)", a95, "ms", baseline=d95,
                 baseline_name="FieldedSearcher.search p95"),
        c.metric(f"FieldedSearcher.search k={K} (p50)", d50, "ms", target=f"< {TARGET_MS} ms",
                 passed=d50 < TARGET_MS, note=f"p95 {d95:.3f} ms"),
        c.metric(f"bm25 arm batch of {len(requests)} throughput (median)",
                 c.median(qps["arm_batch"]), "q/s", baseline=c.median(qps["arm_one_by_one"]),
                 baseline_name="the same requests, one retrieve_batch call each",
                 note=f"threads={params.threads}; {args.repeats} repetitions", digits=1),
        c.metric("FieldedSearcher.search_batch, 2 threads (median)",
                 c.median(qps["search_batch_2"]), "q/s",
                 baseline=c.median(qps["search_batch_1"]),
                 baseline_name="the same batch on 1 thread",
                 note="the search overlaps, query building and hit reading are serialised",
                 digits=1),
    ]
    details = {
        "k": K, "queries": len(timed), "warmup": len(warm), "seed": args.seed + 1,
        "fields": fields, "k1": params.k1, "b": params.b, "index": index,
        "arm_ms": c.summary(arm_ms), "direct_ms": c.summary(direct_ms),
        "pyjnius_static_call_ms": c.summary(bridge),
        "throughput_qps": {k: [round(x, 1) for x in v] for k, v in qps.items()},
        "mean_hits": round(sum(hits) / len(hits), 1),
        "queries_with_no_hit": sum(h == 0 for h in hits),
    }
    c.emit(c.result("bm25", f"BM25 arm on the music catalog, k={K}", metrics, details,
                    started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
