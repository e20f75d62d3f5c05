"""Executors (``--executor local|processes|ray``): speed-ups on this machine's cores, and
Ray's overhead against spawned processes; every executor's results checked identical.

Two jobs, each run ``--repeats`` times per executor (medians; ratios within this run):

* **simulate sweep**: ``pipelines/music.yaml``'s static policy on ``--seeds`` seeds of
  ``--sessions`` sessions each — equal, independent runs (``ltrr simulate --seeds``);
* **evaluate**: BEIR SciFact BM25 (``pipelines/scifact-bm25.yaml``, 300 judged queries),
  the queries' batches shared by ``--workers`` actors that each open the pipeline
  (``ltrr evaluate --executor``), nDCG@10 checked to be 0.6789 on every executor.

Each figure is the wall time of the whole call (``sweep``, ``evaluate_plan``): spawning or
starting workers and opening the pipeline in each is part of it. Ray is started once
(``ray.init(num_cpus=workers)``), as a cluster would be, and its start-up is reported
on its own row. Targets: sweep T_local / T_ray ≥ 1.7, evaluate ≥ 1.6, T_ray / T_processes
− 1 ≤ 10 % (the sweep). How much parallel work the machine gives at all is measured in
the same run (spinning processes, before and after): the ceiling of any speed-up.

    .venv/bin/python benchmarks/bench_ray.py [--sessions 1000] [--seeds 4] [--workers 2]
        [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import _common as c

DATA = c.SHARED_DATA / "beir-scifact"
FILES = ("corpus.jsonl.gz", "queries.jsonl.gz", "qrels/test.tsv.gz")
KINDS = ("local", "processes", "ray")
TARGETS = {"sweep": 1.7, "evaluate": 1.6, "overhead": 0.10}


def _spin(seconds: float, queue) -> None:
    t = perf_counter()
    n = 0
    while perf_counter() - t < seconds:
        n += 1
    queue.put(n)


def capacity(workers: int, seconds: float = 3.0) -> float:
    """Work done by ``workers`` spinning processes / by one: the most any speed-up on
    ``workers`` workers can reach on this machine now (2.0 on two free cores)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    done = []
    for n in (1, workers):
        queue = ctx.Queue()
        procs = [ctx.Process(target=_spin, args=(seconds, queue)) for _ in range(n)]
        for p in procs:
            p.start()
        work = sum(queue.get() for _ in procs)
        for p in procs:
            p.join()
        done.append(work)
    return done[1] / done[0]


def sweep_once(plan, executor, sessions: int, seeds: list[int], out: Path) -> tuple[float, str]:
    """Seconds of one sweep and a digest of what it wrote (but the timings)."""
    from ltrr.simulate.engine import PolicyChoice, SimConfig
    from ltrr.simulate.report import write_sweep
    from ltrr.simulate.sweep import sweep

    choice = PolicyChoice("static", "static", dict(plan.model.policy.with_))
    t = perf_counter()
    results = sweep(plan, "lastfm", {}, [choice], SimConfig(sessions=sessions, round_size=200),
                    seeds, executor=executor)
    seconds = perf_counter() - t
    summary = write_sweep(results, out)
    return seconds, digest(summary, out)


def digest(summary: dict, out: Path) -> str:
    import hashlib

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if k not in ("timings", "per_seed", "files", "plots", "state_dir")}
        return x

    h = hashlib.sha256(json.dumps(strip(summary), sort_keys=True).encode())
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != "summary.json":
            h.update(p.relative_to(out).as_posix().encode() + p.read_bytes())
    return h.hexdigest()[:16]


def evaluate_once(plan, executor) -> tuple[float, float, str]:
    import hashlib

    from ltrr.runtime.batch import evaluate_plan

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run.trec"
        t = perf_counter()
        result, _ = evaluate_plan(plan, DATA / "queries.jsonl.gz", DATA / "qrels" / "test.tsv.gz",
                                  run_path=run, executor=executor)
        seconds = perf_counter() - t
        return seconds, result["measures"]["nDCG@10"], hashlib.sha256(
            run.read_bytes()).hexdigest()[:16]


def main() -> int:
    ap = c.parser(__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=1000, help="sessions per run")
    ap.add_argument("--seeds", type=int, default=4, help="runs of the sweep (one per seed)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    started = perf_counter()
    c.require_data(DATA, FILES)

    import ray

    from ltrr.compiler import load_plan
    from ltrr.executors import open_executor, parse_executor
    from ltrr.runtime.batch import index_plan

    cap_before = capacity(args.workers)
    c.log(f"capacity: {args.workers} spinning processes do ×{cap_before:.2f} the work of one")
    music = load_plan(c.MUSIC_SPEC)
    index = c.ensure_music_index(music)
    scifact = load_plan(c.SCIFACT_SPEC)
    index_plan(scifact)
    t = perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    ray_start = perf_counter() - t
    seeds = list(range(args.seeds))
    times: dict[str, dict[str, list[float]]] = {"sweep": {}, "evaluate": {}}
    digests: dict[str, set[str]] = {"sweep": set(), "evaluate": set()}
    ndcg: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            for r in range(args.repeats):
                for kind in KINDS:
                    with open_executor(parse_executor(kind, args.workers)) as ex:
                        c.log(f"repeat {r + 1}: evaluate SciFact, {kind}")
                        s, ndcg[kind], d = evaluate_once(scifact, ex)
                        times["evaluate"].setdefault(kind, []).append(s)
                        digests["evaluate"].add(d)
                        c.log(f"  {s:.1f} s, nDCG@10 {ndcg[kind]:.4f}")
                        c.log(f"repeat {r + 1}: sweep of {args.seeds} × {args.sessions} "
                              f"sessions, {kind}")
                        s, d = sweep_once(music, ex, args.sessions, seeds,
                                          Path(tmp) / f"{kind}-{r}")
                        times["sweep"].setdefault(kind, []).append(s)
                        digests["sweep"].add(d)
                        c.log(f"  {s:.1f} s")
    finally:
        ray.shutdown()
    cap_after = capacity(args.workers)
    cap = (cap_before + cap_after) / 2
    med = {job: {k: c.median(v) for k, v in by.items()} for job, by in times.items()}
    same = {job: len(d) == 1 for job, d in digests.items()}
    sweep_up = med["sweep"]["local"] / med["sweep"]["ray"]
    eval_up = med["evaluate"]["local"] / med["evaluate"]["ray"]
    overhead = med["sweep"]["ray"] / med["sweep"]["processes"] - 1
    eval_overhead = med["evaluate"]["ray"] / med["evaluate"]["processes"] - 1
    w = args.workers
    metrics = [
        c.metric(f"simulate sweep ({args.seeds} runs × {args.sessions} sessions): "
                 f"T_local / T_ray, {w} workers", sweep_up,
                 target=f">= {TARGETS['sweep']}", passed=sweep_up >= TARGETS["sweep"]
                 and same["sweep"],
                 note=f"local {med['sweep']['local']:.1f} s, ray {med['sweep']['ray']:.1f} s, "
                      f"processes {med['sweep']['processes']:.1f} s (medians of {args.repeats})"
                      f"; outputs identical: {same['sweep']}"),
        c.metric(f"evaluate SciFact BM25 (300 queries): T_local / T_ray, {w} actors", eval_up,
                 target=f">= {TARGETS['evaluate']}", passed=eval_up >= TARGETS["evaluate"]
                 and same["evaluate"],
                 note=f"local {med['evaluate']['local']:.2f} s, ray "
                      f"{med['evaluate']['ray']:.2f} s, processes "
                      f"{med['evaluate']['processes']:.2f} s; nDCG@10 "
                      + ", ".join(f"{k} {v:.4f}" for k, v in ndcg.items())
                      + f"; runs identical: {same['evaluate']}"),
        c.metric("Ray overhead vs processes (simulate sweep)", 100 * overhead, "%",
                 target=f"<= {100 * TARGETS['overhead']:.0f} %",
                 passed=overhead <= TARGETS["overhead"],
                 note=f"evaluate: {100 * eval_overhead:+.1f} %"),
        c.metric("simulate sweep: T_local / T_processes", med["sweep"]["local"]
                 / med["sweep"]["processes"]),
        c.metric(f"machine: work of {w} spinning processes / of one", cap,
                 note=f"before ×{cap_before:.2f}, after ×{cap_after:.2f}: the ceiling of any "
                      f"{w}-worker speed-up here ({w}.0 on {w} free cores)"),
        c.metric("Ray start-up (ray.init, local, once)", 1000 * ray_start, "ms",
                 note="not in the figures above: a cluster is started once for many jobs; "
                      "`--executor ray` without an address pays it per command"),
    ]
    details = {"times_s": {j: {k: [round(x, 3) for x in v] for k, v in by.items()}
                           for j, by in times.items()},
               "medians_s": {j: {k: round(x, 3) for k, v in by.items() for x in [v]}
                             for j, by in med.items()},
               "identical": same, "ndcg@10": ndcg, "sessions": args.sessions,
               "seeds": seeds, "workers": w, "repeats": args.repeats, "index": index,
               "ray": ray.__version__, "ray_start_s": round(ray_start, 3),
               "capacity": {"before": round(cap_before, 3), "after": round(cap_after, 3)}}
    c.emit(c.result("ray", "executors: local vs spawned processes vs Ray", metrics, details,
                    started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
