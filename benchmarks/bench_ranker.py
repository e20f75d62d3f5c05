"""Learned rankers on the music pipeline: MRR of the engaged artist in the simulator, and
the cost of ranking and retraining.

1. Simulation (``ltrr simulate`` engine, the Last.fm user model, the spec's static
   policy): the same ``--sessions`` sessions with the ``score`` ranker (the baseline: the
   fused RRF order), ``lightgbm`` and ``linear`` (``examples/rankers/*.yaml``), each
   learning from the simulated clicks and plays as it serves. Figure: MRR of the target
   in the final top 10 (0 when not shown), whole run and last quarter. Target: the
   learned rankers beat ``score``.
2. Ranking cost: ``rank_batch`` of one query (100 merged candidates) with the trained
   LightGBM model vs the ``score`` ranker on the same requests (the floor), p50; and per
   query in batches of 32.
3. Retraining time of the last model (from the ranker's state).

    .venv/bin/python benchmarks/bench_ranker.py [--sessions 3000] [--out F]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from time import perf_counter

import _common as c

RANKERS = ("lightgbm", "linear")


def registry():
    import ltrr_plugins.simulators.lastfm as lastfm
    from ltrr.registry import build_registry, default_registry

    reg = default_registry()
    return reg if "lastfm" in reg.user_models else build_registry(extra=[("lastfm", lastfm)])


def main() -> int:
    ap = c.parser(__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=3000)
    args = ap.parse_args()
    started = perf_counter()

    import numpy as np
    import yaml

    from ltrr.compiler import load_plan
    from ltrr.runtime.pipeline import Pipeline
    from ltrr.simulate.engine import PolicyChoice, SimConfig, simulate
    from ltrr.simulate.regret import account
    from ltrr.types import Query, RankRequest

    reg = registry()
    plan = load_plan(c.MUSIC_SPEC, reg)
    c.ensure_music_index(plan)
    blocks = {"score": {"use": "score"}}
    for name in RANKERS:
        data = yaml.safe_load((c.ROOT / "examples" / "rankers" / f"{name}.yaml").read_text())
        blocks[name] = {"use": data["use"], "with": data.get("with", {})}
    policy = dict(plan.model.policy.with_)
    choices = [PolicyChoice(name, "static", policy, ranker=block) for name, block in blocks.items()]
    keep = Path(tempfile.mkdtemp(prefix="bench-ranker-"))
    c.log(f"simulation: {args.sessions} sessions × {len(choices)} rankers")
    t = perf_counter()
    result = simulate(plan, "lastfm", {}, choices,
                      SimConfig(sessions=args.sessions, seed=args.seed, keep_state=keep),
                      registry=reg)
    sim_s = perf_counter() - t
    summary, _ = account(result)
    runs = summary["policies"]
    base = runs["score"]
    metrics = [c.metric("score ranker (fused RRF order): MRR of the target", base["mrr"],
                        note=f"last quarter {base['mrr_by_quarter'][-1]}")]
    for name in RANKERS:
        r = runs[name]
        metrics.append(c.metric(
            f"{name} ranker: MRR of the target", r["mrr"], target="> score ranker's MRR",
            passed=r["mrr"] > base["mrr"], baseline=base["mrr"],
            baseline_name="score ranker, same sessions",
            note=f"last quarter {r['mrr_by_quarter'][-1]} vs {base['mrr_by_quarter'][-1]}; "
                 f"clicked {r['clicked']} vs {base['clicked']}"))

    # ranking cost with the trained LightGBM model, on the simulation's queries
    import copy

    from ltrr.simulate.engine import policy_plan

    lplan = policy_plan(plan, choices[1], keep / "lightgbm", reg)
    splan = policy_plan(plan, choices[0], keep / "score", reg)
    queries = [Query(f"q{i}", s.text, s.user_id) for i, s in enumerate(result.sessions[:400])]
    with Pipeline(lplan, registry=reg, log_decisions=False) as lp, \
            Pipeline(splan, registry=reg, log_decisions=False) as sp:
        ranker, score = lp.components["ranker"], sp.components["ranker"]
        trained = ranker.model is not None
        decisions = lp.run_batch(queries)
        reqs = []
        merger = lp.components["merge"]
        for d in decisions:
            merged = merger.merge(d.candidates, plan.model.policy.budget)
            reqs.append(RankRequest(d.query, d.slots, merged, plan.model.output.k))
        one, floor = [], []
        for r in reqs * 2:
            t = perf_counter()
            ranker.rank_batch([r])
            t1 = perf_counter()
            score.rank_batch([copy.copy(r)])
            floor.append((perf_counter() - t1) * 1000)
            one.append((t1 - t) * 1000)
        t = perf_counter()
        for batch in c.chunks(reqs, 32):
            ranker.rank_batch(batch)
        batch_ms = (perf_counter() - t) * 1000 / len(reqs)
        training = ranker.state.get("last_training") or {}
        cands = float(np.mean([len(r.merged) for r in reqs]))
    metrics.append(c.metric("lightgbm rank_batch, one query, p50", c.median(one), "ms",
                            baseline=c.median(floor), baseline_name="score ranker p50",
                            note=f"{cands:.0f} candidates per query; model trained: {trained}; "
                                 f"batches of 32: {batch_ms:.3f} ms/query"))
    metrics.append(c.metric("lightgbm retraining (last)", training.get("seconds"), "s",
                            note=f"{training.get('requests')} requests, {training.get('rows')} "
                                 f"rows; holdout {training.get('holdout')}"))
    details = {"sessions": args.sessions, "simulation_seconds": round(sim_s, 1),
               "runs": {k: {"mrr": v["mrr"], "mrr_by_quarter": v["mrr_by_quarter"],
                            "mrr_by_type": v["mrr_by_type"], "recall": v["recall"],
                            "clicked": v["clicked"], "timings": v["timings"]}
                        for k, v in runs.items()},
               "command": f".venv/bin/python benchmarks/bench_ranker.py --sessions {args.sessions}"}
    c.emit(c.result("ranker", "Learned rankers: simulator MRR, ranking and retraining cost",
                    metrics, details, started=started), args.out)
    import shutil

    shutil.rmtree(keep, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
