"""Learned rankers on the music pipeline: MRR of the engaged artist in the simulator, and
the cost of ranking and retraining.

1. Simulation (``ltrr simulate`` engine, the Last.fm user model, the spec's static
   policy): the same ``--sessions`` sessions with the ``score`` ranker (the baseline: the
   fused RRF order), ``lightgbm`` and ``linear`` (``examples/rankers/*.yaml``), each
   learning from the simulated clicks and plays as it serves. Figure: MRR of the target
   in the final top 10 (0 when not shown), whole run and last quarter. Repeated over
   ``--seeds`` independent simulations (different sessions each); per learned ranker the
   MRR difference to ``score`` is paired by seed. Target: the lower end of its 95%
   interval (t, seeds - 1 degrees of freedom) is above ``MARGIN`` (+0.01 MRR: below it a
   learned model costs training and ranking time for a change users would not notice).
2. Ranking cost: ``rank_batch`` of one query (100 merged candidates) with the trained
   LightGBM model vs the ``score`` ranker on the same requests (the floor), p50; and per
   query in batches of 32.
3. Retraining time of the last model (from the ranker's state).

    .venv/bin/python benchmarks/bench_ranker.py [--sessions 3000] [--seeds 5] [--out F]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from time import perf_counter

import _common as c

RANKERS = ("lightgbm", "linear")
MARGIN = 0.01


def registry():
    import ltrr_plugins.simulators.lastfm as lastfm
    from ltrr.registry import build_registry, default_registry

    reg = default_registry()
    return reg if "lastfm" in reg.user_models else build_registry(extra=[("lastfm", lastfm)])


def main() -> int:
    ap = c.parser(__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=5, help="independent simulations (>= 2)")
    args = ap.parse_args()
    started = perf_counter()

    import numpy as np
    import yaml

    from ltrr.compiler import load_plan
    from ltrr.runtime.pipeline import Pipeline
    from ltrr.simulate.engine import PolicyChoice, SimConfig
    from ltrr.simulate.regret import account
    from ltrr.simulate.sweep import simulate
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
    from scipy.stats import t as student

    seeds = [args.seed + i for i in range(max(2, args.seeds))]
    per_seed: dict[int, dict] = {}
    sim_s = 0.0
    for seed in seeds:
        keep = Path(tempfile.mkdtemp(prefix="bench-ranker-"))
        c.log(f"simulation seed {seed}: {args.sessions} sessions × {len(choices)} rankers")
        t = perf_counter()
        result = simulate(plan, "lastfm", {}, choices,
                          SimConfig(sessions=args.sessions, seed=seed, keep_state=keep),
                          registry=reg)
        sim_s += perf_counter() - t
        per_seed[seed] = account(result)[0]["policies"]
        if seed != seeds[-1]:
            import shutil

            shutil.rmtree(keep, ignore_errors=True)
    runs = per_seed[seeds[-1]]            # the last seed's run: details and ranking cost
    base_mrr = [per_seed[s]["score"]["mrr"] for s in seeds]
    metrics = [c.metric("score ranker (fused RRF order): MRR of the target",
                        float(np.mean(base_mrr)),
                        note=f"mean of {len(seeds)} seeds: {', '.join(map(str, base_mrr))}")]
    quantile = float(student.ppf(0.975, len(seeds) - 1))
    for name in RANKERS:
        mrr = [per_seed[s][name]["mrr"] for s in seeds]
        diff = np.array(mrr) - np.array(base_mrr)
        se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
        low, high = diff.mean() - quantile * se, diff.mean() + quantile * se
        metrics.append(c.metric(
            f"{name} ranker: MRR of the target", float(np.mean(mrr)),
            baseline=float(np.mean(base_mrr)), baseline_name="score ranker, same sessions",
            note=f"per seed {', '.join(map(str, mrr))}"))
        metrics.append(c.metric(
            f"{name} − score: MRR difference, paired by seed", float(diff.mean()),
            target=f"95% interval above +{MARGIN}", passed=bool(low > MARGIN),
            note=f"paired SE {se:.4f}, 95% interval [{low:.4f}, {high:.4f}] over "
                 f"{len(seeds)} seeds of {args.sessions} sessions"))

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
    details = {"sessions": args.sessions, "seeds": seeds, "simulation_seconds": round(sim_s, 1),
               "mrr_by_seed": {s: {k: v["mrr"] for k, v in per_seed[s].items()}
                               for s in seeds},
               "runs": {k: {"mrr": v["mrr"], "mrr_by_quarter": v["mrr_by_quarter"],
                            "mrr_by_type": v["mrr_by_type"], "recall": v["recall"],
                            "clicked": v["clicked"], "timings": v["timings"]}
                        for k, v in runs.items()},
               "command": f".venv/bin/python benchmarks/bench_ranker.py --sessions "
                          f"{args.sessions} --seeds {len(seeds)}"}
    c.emit(c.result("ranker", "Learned rankers: simulator MRR, ranking and retraining cost",
                    metrics, details, started=started), args.out)
    import shutil

    shutil.rmtree(keep, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
