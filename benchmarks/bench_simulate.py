"""Speed of the simulation engine (``ltrr simulate``): music static policy, music-bandit vw.

One simulation of ``--sessions`` Last.fm sessions (rounds of ``--round-size``) with the
spec's ``static`` policy: serve (logged), probe (every arm at the full budget, unlogged),
engage (click model) and learn (``ingest`` → the memory arm) — the engine's own cost,
which a learning policy adds its learn + predict time to.

Baseline, same run: the same queries through ``Pipeline.run_batch`` alone (no log), in
batches of the same size, measured once before and once after the simulation; the
simulation serves every query twice (serve + probe), so ≈ 2× the baseline is the floor.

Then the policy the target names: the same number of sessions of
``pipelines/music-bandit.yaml`` with its own ``vw`` policy (learning and predicting as it
serves). Target: 20,000 sessions of that ``vw`` run < 10 min, projected linearly from the
measured run (``--sessions 20000`` measures it outright).

    .venv/bin/python benchmarks/bench_simulate.py [--sessions 2000] [--round-size 200] [--out F]
"""

from __future__ import annotations

import sys
from time import perf_counter

import _common as c

TARGET_S = 600.0
FULL = 20_000


def registry():
    import ltrr_plugins.simulators.lastfm as lastfm
    from ltrr.registry import build_registry, default_registry

    reg = default_registry()
    return reg if "lastfm" in reg.user_models else build_registry(extra=[("lastfm", lastfm)])


def baseline(plan, reg, queries, size: int) -> float:
    """ms per query of Pipeline.run_batch alone (after one warm-up batch)."""
    from ltrr.runtime.pipeline import Pipeline

    with Pipeline(plan, registry=reg, log_decisions=False) as p:
        p.run_batch(queries[:size])
        t = perf_counter()
        for batch in c.chunks(queries, size):
            p.run_batch(batch)
        return 1000 * (perf_counter() - t) / len(queries)


def main() -> None:
    ap = c.parser(__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--round-size", type=int, default=200)
    args = ap.parse_args()
    started = perf_counter()

    from ltrr.compiler import load_plan
    from ltrr.simulate.engine import PolicyChoice, SimConfig, make_user_model, sample_sessions
    from ltrr.simulate.sweep import simulate
    from ltrr.types import Query

    reg = registry()
    plan = load_plan(c.MUSIC_SPEC, reg)
    index = c.ensure_music_index(plan)
    model = make_user_model(plan, "lastfm", {}, reg)
    t = perf_counter()
    sessions = sample_sessions(model, args.sessions, args.seed)
    sample_ms = 1000 * (perf_counter() - t) / args.sessions
    queries = [Query(f"b{i}", s.text, s.user_id) for i, s in enumerate(sessions)]
    c.log(f"baseline 1: {args.sessions} queries through run_batch")
    base = [baseline(plan, reg, queries, args.round_size)]
    c.log("simulation")
    choice = PolicyChoice("static", "static", dict(plan.model.policy.with_))
    t = perf_counter()
    result = simulate(plan, "lastfm", {}, [choice],
                      SimConfig(sessions=args.sessions, seed=args.seed,
                                round_size=args.round_size), registry=reg)
    wall = perf_counter() - t
    c.log("baseline 2")
    base.append(baseline(plan, reg, queries, args.round_size))
    c.log("simulation: music-bandit with its vw policy")
    bandit = load_plan(c.ROOT / "pipelines" / "music-bandit.yaml", reg)
    c.ensure_music_index(bandit)
    vw_choice = PolicyChoice("vw", bandit.model.policy.use, dict(bandit.model.policy.with_))
    t = perf_counter()
    vw_result = simulate(bandit, "lastfm", {}, [vw_choice],
                         SimConfig(sessions=args.sessions, seed=args.seed,
                                   round_size=args.round_size), registry=reg)
    vw_wall = perf_counter() - t
    vw_ms = 1000 * vw_result.runs[0].timings["seconds"] / args.sessions
    run = result.runs[0]
    tm = run.timings
    n = args.sessions
    per = {k: 1000 * tm[k] / n for k in ("serve", "probe", "engage", "learn")}
    loop_ms = 1000 * tm["seconds"] / n
    base_ms = sum(base) / len(base)
    projected = FULL * (vw_ms + sample_ms) / 1000
    metrics = [
        c.metric("simulation per session (static policy)", loop_ms, "ms", baseline=base_ms,
                 baseline_name="Pipeline.run_batch per query, no log (mean of 2 passes)",
                 note=f"serve {per['serve']:.2f} + probe {per['probe']:.2f} + engage "
                      f"{per['engage']:.2f} + learn {per['learn']:.2f} ms; recall "
                      f"{run.reward.mean():.3f}"),
        c.metric("simulation per session (music-bandit, vw policy)", vw_ms, "ms",
                 baseline=loop_ms, baseline_name="static policy on music.yaml",
                 note=f"{n} sessions in {vw_wall:.1f} s wall"),
        c.metric(f"{FULL:,} sessions of the vw policy (projected from {n})", projected, "s",
                 target=f"< {TARGET_S:.0f} s", passed=projected < TARGET_S,
                 note=f"measured vw run x {FULL // n}, incl. sampling {sample_ms:.2f} "
                      "ms/session" if n < FULL else "measured outright"),
        c.metric("engine's own work per session (engage + learn + bookkeeping)",
                 loop_ms - per["serve"] - per["probe"], "ms",
                 note="what the engine adds to the two pipeline passes"),
    ]
    details = {"sessions": n, "round_size": args.round_size, "timings": tm,
               "baseline_ms_per_query": [round(b, 4) for b in base],
               "sample_ms_per_session": round(sample_ms, 4), "wall_seconds": round(wall, 2),
               "index": index, "recall": round(float(run.reward.mean()), 4)}
    details["vw"] = {"timings": vw_result.runs[0].timings, "wall_seconds": round(vw_wall, 2)}
    c.emit(c.result("simulate", "simulation engine speed (music static; music-bandit vw)",
                    metrics,
                    details, started=started), args.out)


if __name__ == "__main__":
    sys.exit(main())
