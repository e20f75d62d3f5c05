"""Memory arm (query → entity memory) on the music catalog with ~100k learned pairs.

* cold start: ``MemoryArm.build`` on the 17,632 artists (names, variants, top-50
  artists per tag), then ``open``;
* learning: synthetic feedback — head queries drawn Zipf-like from catalog queries
  (names, tags, combinations), engaged entities mostly among the query's cold-start
  predictions, otherwise popular artists; clicks, plays, favorites and skips over 180
  days — until ~100k distinct (query, entity) pairs exist. Throughput of one
  ``learn`` of everything, and of the same events fed incrementally in chunks
  (each call rewrites the learned state atomically);
* lookup: 2,000 single-query calls ``retrieve_batch([one request])`` at k = 100 on
  the learned arm (after 300 warm-ups), half head queries that were learned, half
  fresh catalog queries (exact, near-duplicate, fuzzy, unknown), interleaved query by
  query with the baseline: ``dict.get(normalize(text))`` on a dict of precomputed
  candidate lists — a memo of the answers, the floor of any lookup.

Target: lookup p50 < 0.2 ms. The arm's params come from the ``memory`` arm of
pipelines/music.yaml when it has one, else from DEFAULT below (the same block).

    .venv/bin/python benchmarks/bench_memory.py [--pairs 100000] [--lookups 2000] [--out FILE]
"""

from __future__ import annotations

import gc
import random
import shutil
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import _common as c

TARGET_MS = 0.2
K = 100
DAY = 86400.0
DEFAULT = {
    "name": {"column": "name"},
    "attributes": [{"column": "tags", "weight": 0.6, "top_n": 50, "rank_decay": 0.15}],
    "popularity": "popularity",
    "prior_strength": 3.0,
    "half_life_days": 30,
}
TYPES = [("click", 1.0, 0.70), ("play", 1.0, 0.15), ("favorite", 2.0, 0.05),
         ("skip", -0.5, 0.10)]


def synth_interactions(arm, catalog, pairs_target: int, seed: int):
    """Interactions (the learn() input) until ``pairs_target`` distinct (key, entity) pairs."""
    import polars as pl

    from ltrr.feedback.interactions import EVENT_COLUMNS
    from ltrr.text import normalize

    rng = random.Random(seed)
    texts, seen = [], set()
    for q in c.music_queries(catalog, 120_000, seed):
        key = normalize(q)
        if key and key not in seen:
            seen.add(key)
            texts.append(q)
    rng.shuffle(texts)
    zipf = [1.0 / (i + 1) ** 0.6 for i in range(len(texts))]
    ids = catalog.ids
    pop = catalog.frame["popularity"].to_list()
    types, weights, probs = zip(*TYPES)
    t0 = 1_700_000_000.0
    pairs: set[tuple[str, str]] = set()
    rows = []
    while len(pairs) < pairs_target:
        for qi in rng.choices(range(len(texts)), zipf, k=20_000):
            q = texts[qi]
            if rng.random() < 0.6:
                predicted = [e for e, _, _ in arm.scores(q, 10)[0]]
                entity = predicted[min(int(rng.expovariate(0.7)), len(predicted) - 1)] \
                    if predicted else rng.choices(ids, pop)[0]
            else:
                entity = rng.choices(ids, pop)[0]
            ti = rng.choices(range(len(types)), probs)[0]
            rows.append((q, entity, types[ti], weights[ti], t0 + rng.random() * 180 * DAY))
            pairs.add((normalize(q), entity))
            if len(pairs) >= pairs_target:
                break
    frame = pl.DataFrame(
        {"event_id": [f"e{i}" for i in range(len(rows))], "request_id": [None] * len(rows),
         "user_id": [f"u{rng.randrange(2000)}" for _ in rows],
         "query": [r[0] for r in rows], "entity_id": [r[1] for r in rows],
         "type": [r[2] for r in rows], "weight": [r[3] for r in rows],
         "position": [1] * len(rows), "timestamp": [r[4] for r in rows]},
        schema_overrides={"request_id": pl.String, "position": pl.Int32})
    return frame.select(EVENT_COLUMNS), texts, zipf


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=100_000, help="distinct learned pairs")
    p.add_argument("--lookups", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--chunk", type=int, default=10_000, help="events per incremental learn")
    args = p.parse_args()
    started = perf_counter()

    from ltrr.catalog import Catalog
    from ltrr.compiler import load_plan
    from ltrr.components import ComponentContext
    from ltrr.types import ArmRequest, Candidate, Query
    from ltrr_plugins.arms.memory import MemoryArm, MemoryParams
    from ltrr.text import normalize

    plan = load_plan(c.MUSIC_SPEC)
    node = next((n for n in plan.arms if n.registration.name == "memory"), None)
    params = node.params if node is not None else MemoryParams.model_validate(DEFAULT)
    m = plan.model.catalog
    catalog = Catalog(plan.spec.resolve(m.path), m.id, m.format)
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))

    def new_arm(name: str) -> MemoryArm:
        ctx = ComponentContext(name, tmp / name, plan.spec.base_dir, lambda: catalog,
                               plan.view)
        return MemoryArm(params, ctx)

    try:
        c.log("cold start: build + open")
        arm = new_arm("memory")
        (tmp / "memory").mkdir()
        t = perf_counter()
        build_stats = arm.build(tmp / "memory", lambda done, total: None)
        build_s = perf_counter() - t
        t = perf_counter()
        arm.open()
        open_s = perf_counter() - t

        c.log(f"synthesising feedback until {args.pairs} distinct pairs")
        inter, texts, zipf = synth_interactions(arm, catalog, args.pairs, args.seed)
        c.log(f"{inter.height} interactions, {len(texts)} distinct queries")

        c.log("learn: one batch")
        t = perf_counter()
        learn_stats = arm.learn(inter)
        batch_s = perf_counter() - t

        c.log(f"learn: incremental, chunks of {args.chunk}")
        inc = new_arm("incremental")
        inc.open()
        chunk_s = []
        for i in range(0, inter.height, args.chunk):
            t = perf_counter()
            inc.learn(inter.slice(i, args.chunk))
            chunk_s.append(perf_counter() - t)
        t = perf_counter()
        small = inc.learn(inter.slice(0, 100))         # 100 events on the full state
        small_s = perf_counter() - t
        t = perf_counter()
        reopened = new_arm("memory")
        reopened.open()
        reopen_s = perf_counter() - t

        rng = random.Random(args.seed + 1)
        fresh = c.music_queries(catalog, args.warmup + args.lookups, args.seed + 7)
        head = rng.choices(texts, zipf, k=args.warmup + args.lookups)
        mix = [h if i % 2 == 0 else f for i, (h, f) in enumerate(zip(head, fresh))]
        warm, timed = mix[:args.warmup], mix[args.warmup:]
        node_id = arm.ctx.node_id
        memo = {}
        for q in set(mix):                      # a second instance: arm's caches stay cold
            ranked = reopened.scores(q, K)[0]
            memo[normalize(q)] = [Candidate(e, node_id, i, s)
                                  for i, (e, s, _) in enumerate(ranked, 1)]
        requests = [ArmRequest(Query(f"r{i}", q), K) for i, q in enumerate(timed)]
        for q in warm:
            arm.retrieve_batch([ArmRequest(Query("w", q), K)])
            memo.get(normalize(q))

        c.log(f"lookup: {len(timed)} single queries, arm and dict baseline interleaved")
        arm_ms, base_ms, hits = [], [], []
        by_match: dict[int, list[float]] = {}
        for i, (q, req) in enumerate(zip(timed, requests)):
            for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                if which == 0:
                    t = perf_counter()
                    out = arm.retrieve_batch([req])
                    ms = (perf_counter() - t) * 1000.0
                    arm_ms.append(ms)
                    hits.append(len(out[0]))
                else:
                    t = perf_counter()
                    memo.get(normalize(q))
                    base_ms.append((perf_counter() - t) * 1000.0)
            by_match.setdefault(reopened.scores(q, K)[2], []).append(ms)

        c.log("evidence: the same single queries, evidence_batch (what a policy asks)")
        from ltrr.types import PolicyContext

        ev_ms = []
        for q in timed:
            cx = [PolicyContext(Query("e", q), [])]
            t = perf_counter()
            arm.evidence_batch(cx)
            ev_ms.append((perf_counter() - t) * 1000.0)

        c.log("fuzzy fallback, uncached: 300 artist names with one character deleted")
        typos = []
        for name in rng.sample(catalog.frame["name"].to_list(), 3000):
            key = normalize(name)
            if len(key) >= 7 and len(typos) < 300:
                i = rng.randrange(1, len(key) - 1)
                typos.append(key[:i] + key[i + 1:])
        fuzzy_ms, fuzzy_found = [], 0
        for q in typos:
            arm._fuzzy_cache.clear()
            t = perf_counter()
            ranked, _, match = arm.scores(q, K)
            fuzzy_ms.append((perf_counter() - t) * 1000.0)
            fuzzy_found += match == 2

        t = perf_counter()
        arm.retrieve_batch(requests)
        batch_qps = len(requests) / (perf_counter() - t)
        gc.disable()
        try:
            t = perf_counter()
            arm.retrieve_batch(requests)
            batch_qps_nogc = len(requests) / (perf_counter() - t)
        finally:
            gc.enable()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    a50, a95 = c.median(arm_ms), c.percentile(arm_ms, 95)
    b50, b95 = c.median(base_ms), c.percentile(base_ms, 95)
    n = inter.height
    inc_total = sum(chunk_s)
    names = {0: "exact", 1: "near", 2: "fuzzy", -1: "unknown"}
    metrics = [
        c.metric(f"memory lookup single query k={K} (p50)", a50, "ms",
                 target=f"< {TARGET_MS} ms", passed=a50 < TARGET_MS, baseline=b50,
                 baseline_name="dict.get(normalize(q)) p50", note=f"p95 {a95:.3f} ms; "
                 f"{learn_stats['pairs']} learned pairs"),
        c.metric(f"memory lookup single query k={K} (p95)", a95, "ms", baseline=b95,
                 baseline_name="dict.get(normalize(q)) p95"),
        c.metric("memory learn, one batch", n / batch_s, "interactions/s", digits=0,
                 note=f"{n} interactions in {batch_s:.2f} s"),
        c.metric(f"memory learn, incremental chunks of {args.chunk}", n / inc_total,
                 "interactions/s", digits=0, baseline=n / batch_s,
                 baseline_name="one batch",
                 note=f"median chunk {c.median(chunk_s):.3f} s; 100 events on the full "
                      f"state {small_s:.3f} s"),
        c.metric(f"memory retrieve_batch of {len(requests)} throughput", batch_qps, "q/s",
                 digits=0, baseline=1000.0 / a50, baseline_name="1 / single-query p50",
                 note=f"{batch_qps_nogc:.0f} q/s with the garbage collector off"),
        c.metric("memory evidence for a policy, single query (p50)", c.median(ev_ms), "ms",
                 baseline=a50, baseline_name=f"lookup k={K} p50",
                 note=f"p95 {c.percentile(ev_ms, 95):.3f} ms; evidence_batch: match, "
                      "evidence, top (issue 14: asked for every query before allocating)"),
        c.metric("memory fuzzy fallback, uncached (p50)", c.median(fuzzy_ms), "ms",
                 note=f"p95 {c.percentile(fuzzy_ms, 95):.3f} ms; {fuzzy_found}/{len(typos)} "
                      "one-deletion typos of artist names matched"),
    ]
    details = {
        "k": K, "params": params.model_dump(mode="json"), "build": build_stats,
        "build_seconds": round(build_s, 3), "open_seconds": round(open_s, 3),
        "reopen_with_learned_seconds": round(reopen_s, 3),
        "interactions": n, "distinct_queries": len(texts), "learn": learn_stats,
        "learn_small_batch": small, "learn_chunk_seconds": c.summary(chunk_s),
        "arm_ms": c.summary(arm_ms), "baseline_ms": c.summary(base_ms),
        "arm_ms_by_match": {names[k]: c.summary(v) for k, v in sorted(by_match.items())},
        "fuzzy_uncached_ms": c.summary(fuzzy_ms),
        "fuzzy_blocks": {"keys": sum(map(len, arm._buckets.values())),
                         "blocks": len(arm._buckets),
                         "largest": max(map(len, arm._buckets.values()))},
        "mean_hits": round(sum(hits) / len(hits), 1),
        "queries_with_no_hit": sum(h == 0 for h in hits),
        "lookups": len(timed), "warmup": len(warm), "seed": args.seed,
    }
    c.emit(c.result("memory", f"Memory arm on the music catalog, ~{args.pairs} learned pairs",
                    metrics, details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
