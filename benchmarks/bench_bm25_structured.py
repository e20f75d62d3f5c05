"""Structured BM25 arm latency on the music catalog (17,632 artists), k = 100.

The music pipeline's lexical arm with a popularity prior and slot constraints (the
block of docs/arms/bm25.md: tag slots as filters on the ``tags`` field with their span
removed from the text, artist slots as boosts on ``name``), indexed into a temporary
state folder. Queries are drawn from the catalog (``_common.music_queries``) and slotted
by the pipeline's own dictionary slotter, so the arm sees real slots (tag filters,
fills, fuzzy slots).

Single-query latency, 1000 queries after 200 warm-ups, three paths interleaved query
by query (the order rotating), so machine noise hits them alike:

- structured: ``Bm25Arm.retrieve_batch([one ArmRequest with its slots])`` on the
  structured arm (prior + slots + features);
- plain: the same arm class on the same index without prior and slots (what the
  bm25 arm costs in ``pipelines/music.yaml`` today): the baseline;
- direct: ``FieldedSearcher.search(text, 100, fields)`` on that index.

Target: structured p50 < 2 ms.

    .venv/bin/python benchmarks/bench_bm25_structured.py [--queries 1000] [--out FILE]
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import _common as c

TARGET_MS = 2.0
K = 100
LEXICAL = {
    "fields": {"name": 3.0, "tag_text": 1.0},
    "k1": 0.9,
    "b": 0.4,
    "prior": {"column": "popularity", "weight": 3.0, "transform": "none"},
    "slots": {
        "tag": {"field": "tags", "mode": "filter", "boost": 0.5, "remove_from_text": True,
                "yield_to": ["artist"]},
        "artist": {"field": "name", "mode": "boost", "boost": 1.0},
    },
}


def write_spec(folder: Path) -> Path:
    import yaml

    data = yaml.safe_load(c.MUSIC_SPEC.read_text(encoding="utf-8"))
    data["catalog"]["path"] = str((c.MUSIC_SPEC.parent / data["catalog"]["path"]).resolve())
    data["state_dir"] = str(folder / "state")
    data.setdefault("log", {})["decisions"] = False
    for arm in data["arms"]:                       # relation files, relative to pipelines/
        for rel in arm.get("with", {}).get("relations", []):
            rel["path"] = str((c.MUSIC_SPEC.parent / rel["path"]).resolve())
    for arm in data["arms"]:
        if arm.get("use") == "bm25":
            arm["with"] = LEXICAL
    path = folder / "music-structured.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=200)
    args = p.parse_args()
    started = perf_counter()

    from ltrr.compiler import load_plan
    from ltrr.runtime.pipeline import Pipeline, new_request_id
    from ltrr.types import ArmRequest, Query
    from ltrr_plugins.arms.bm25 import Bm25Arm, Bm25Params
    from ltrr_plugins.arms.lucene import FieldedSearcher

    folder = Path(tempfile.mkdtemp(prefix="ltrr-bench-bm25s-"))
    try:
        spec = write_spec(folder)
        plan = load_plan(spec)
        t = perf_counter()
        c.log("indexing the structured music index (temporary state folder)")
        index = c.ensure_music_index(plan)
        index["seconds"] = round(perf_counter() - t, 3)
        node = next(n for n in plan.arms if n.registration.name == "bm25")
        slotter_id = plan.slotters[0].id

        with Pipeline(plan, log_decisions=False) as pipeline:
            arm = pipeline.components[node.id]
            slotter = pipeline.components[slotter_id]
            plain_params = Bm25Params(fields=LEXICAL["fields"], k1=LEXICAL["k1"],
                                      b=LEXICAL["b"])
            plain = Bm25Arm(plain_params, dataclasses.replace(arm.ctx))
            plain.open()
            fields = dict(plain_params.fields)
            searcher = FieldedSearcher(arm.ctx.state_dir / "lucene", k1=0.9, b=0.4)
            try:
                texts = c.music_queries(pipeline.catalog, args.warmup + args.queries,
                                        args.seed + 2)
                queries = [Query(new_request_id(), q) for q in texts]
                slots = slotter.slot_batch(queries)
                structured = [ArmRequest(q, K, s) for q, s in zip(queries, slots)]
                bare = [ArmRequest(q, K) for q in queries]
                w = args.warmup

                c.log(f"warm-up: {w} queries, all paths")
                for i in range(w):
                    arm.retrieve_batch([structured[i]])
                    plain.retrieve_batch([bare[i]])
                    searcher.search(texts[i], K, fields)

                c.log(f"single-query latency: {args.queries} queries, 3 paths interleaved")
                ms = {"structured": [], "plain": [], "direct": []}
                slotted = filtered = filled = 0
                hits = []
                for i in range(w, len(texts)):
                    order = [("structured", "plain", "direct"), ("plain", "direct", "structured"),
                             ("direct", "structured", "plain")][i % 3]
                    for which in order:
                        t = perf_counter()
                        if which == "structured":
                            out = arm.retrieve_batch([structured[i]])[0]
                        elif which == "plain":
                            plain.retrieve_batch([bare[i]])
                        else:
                            searcher.search(texts[i], K, fields)
                        ms[which].append((perf_counter() - t) * 1000.0)
                        if which == "structured":
                            hits.append(len(out))
                            names = {s.name for s in structured[i].slots}
                            slotted += bool(names & set(LEXICAL["slots"]))
                            filtered += "tag" in names
                            filled += any(cand.features.get("relaxed") for cand in out)

                c.log(f"batch throughput: retrieve_batch({args.queries} requests), both arms")
                t = perf_counter()
                arm.retrieve_batch(structured[w:])
                s_qps = args.queries / (perf_counter() - t)
                t = perf_counter()
                plain.retrieve_batch(bare[w:])
                p_qps = args.queries / (perf_counter() - t)
            finally:
                searcher.close()
                plain.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    s50, s95 = c.median(ms["structured"]), c.percentile(ms["structured"], 95)
    p50, p95 = c.median(ms["plain"]), c.percentile(ms["plain"], 95)
    d50 = c.median(ms["direct"])
    metrics = [
        c.metric(f"structured bm25 arm single query k={K} (p50)", s50, "ms",
                 target=f"< {TARGET_MS} ms", passed=s50 < TARGET_MS, baseline=p50,
                 baseline_name="plain bm25 arm p50", note=f"p95 {s95:.3f} ms"),
        c.metric(f"structured bm25 arm single query k={K} (p95)", s95, "ms", baseline=p95,
                 baseline_name="plain bm25 arm p95"),
        c.metric(f"plain bm25 arm single query k={K} (p50)", p50, "ms", baseline=d50,
                 baseline_name="FieldedSearcher.search p50"),
        c.metric(f"structured bm25 arm batch of {args.queries} throughput", s_qps, "q/s",
                 baseline=p_qps, baseline_name="plain arm batch", digits=1),
    ]
    details = {
        "k": K, "queries": args.queries, "warmup": args.warmup, "seed": args.seed + 2,
        "lexical": LEXICAL, "index": index,
        "structured_ms": c.summary(ms["structured"]), "plain_ms": c.summary(ms["plain"]),
        "direct_ms": c.summary(ms["direct"]),
        "queries_with_slots_used": slotted, "queries_with_tag_filter": filtered,
        "queries_filled_after_filter": filled,
        "mean_hits": round(sum(hits) / len(hits), 1),
    }
    c.emit(c.result("bm25_structured", f"Structured BM25 arm (prior + slots), k={K}", metrics,
                    details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
