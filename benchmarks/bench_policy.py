"""Policy overhead per decision: choosing (predict) and learning, for the learning policies.

The policies are built on the music pipeline's shape (arms names, lexical, memory,
related; budget 100) without loading any index: the policy's own cost is measured,
not the arms'. Contexts are music query texts from the catalog with synthetic slots
(an artist or tag slot, exact or fuzzy, for about half of them), a user id out of
200, and a timestamp.

* predict, single: ``choose_batch([one context])``, 2000 times after 200 warm-ups,
  interleaved context by context with the baseline; p50/p95 per decision.
* predict, batch: ``choose_batch`` of 256 contexts; per-decision figure.
* learn: ``learn(interactions)`` on frames of 256 decisions (one 'play' each, rewarded
  when a random arm "found" it) as ``ltrr feedback`` delivers them; per decision.
* learn+predict = single predict p50 + learn per decision: the target.
* baseline, same run: the ``static`` policy's ``choose_batch([one context])``,
  interleaved with every single predict (the floor of calling a policy at all).

Configurations: uniform, epsilon_greedy, vw with each exploration (squarecb default,
epsilon, softmax, bag 5, cover 5), at step 25 (35 actions); and vw squarecb at step 10
with max_arms 3 (a larger space); and the policy of ``pipelines/music-bandit.yaml`` (five
arms, budget 10, step 5: 15 actions; squarecb, the query's words and n-grams (text) and
the cubic query × slots × action interaction).

Targets: learn+predict < 0.3 ms per decision for vw with default params (step 25) and for
the music-bandit policy.

    .venv/bin/python benchmarks/bench_policy.py [--decisions 2000] [--out FILE]
"""

from __future__ import annotations

import gc
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import _common as c

TARGET_MS = 0.3
ARMS = ("names", "lexical", "memory", "related")
BUDGET = 100
CONFIGS = [
    ("uniform", "uniform", {"step": 25}),
    ("epsilon_greedy", "epsilon_greedy", {"step": 25}),
    ("vw epsilon (default)", "vw", {"step": 25}),
    ("vw squarecb", "vw", {"step": 25, "exploration": "squarecb"}),
    ("vw softmax", "vw", {"step": 25, "exploration": "softmax"}),
    ("vw bag 5", "vw", {"step": 25, "exploration": "bag", "bag": 5}),
    ("vw cover 5", "vw", {"step": 25, "exploration": "cover", "cover": 5}),
    ("vw epsilon, step 10, max_arms 3", "vw", {"step": 10, "max_arms": 3}),
    # pipelines/music-bandit.yaml's policy: five arms, budget 10, 15 actions
    ("vw music-bandit (squarecb, text, QSA, budget 10)", "vw",
     {"step": 5, "exploration": "squarecb", "gamma_scale": 30, "learning_rate": 0.5,
      "features": ["query", "text", "slots"], "interactions": ["QA", "WA", "SA", "QSA"],
      "_arms": ARMS + ("semantic",), "_budget": 10}),
]
FEATURES = ["query", "slots", "time", "user"]


def contexts(n: int, seed: int, catalog) -> list:
    from ltrr.types import PolicyContext, Query, Slot

    rng = random.Random(seed)
    texts = c.music_queries(catalog, n, seed)
    out = []
    for i, text in enumerate(texts):
        slots = []
        r = rng.random()
        if r < 0.3:
            slots.append(Slot("artist", text, 0, len(text), 1.0 if r < 0.2 else 0.9, "1"))
        elif r < 0.5:
            slots.append(Slot("tag", text, 0, len(text), 1.0, None))
        q = Query(f"q{seed}-{i}", text, f"u{rng.randrange(200)}",
                  {"timestamp": 1_700_000_000 + rng.randrange(86_400 * 14)})
        out.append(PolicyContext(q, slots))
    return out


def interactions(policy, ctxs, rng):
    """One 'play' per decision, retrieved when a random arm of the allocation found it."""

    from ltrr.feedback.interactions import interaction_frame

    actions = policy.choose_batch(ctxs)
    rows = []
    for a, cx in zip(actions, ctxs):
        arm = rng.choice(ARMS)
        hit = arm in a.allocation and rng.random() < 0.5 + 0.4 * (arm == "lexical")
        rows.append({"event_id": "e" + cx.query.request_id, "request_id": cx.query.request_id,
                     "user_id": cx.query.user_id, "query": cx.query.text,
                     "entity_id": str(rng.randrange(1, 2000)), "type": "play", "weight": 1.0,
                     "position": 1, "timestamp": float(cx.query.context["timestamp"]),
                     "in_candidates": hit, "arms": [arm] if hit else None,
                     "allocation": [{"arm": k, "k": v} for k, v in a.allocation.items()],
                     "probability": a.probability, "action_index": a.index,
                     "pmf": json.dumps(a.pmf), "action_features": json.dumps(a.features)})
    return interaction_frame(rows)


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--decisions", type=int, default=2000, help="single predictions timed")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--learn-batches", type=int, default=8, help="learn calls of 256")
    args = p.parse_args()
    started = perf_counter()

    from ltrr.catalog import Catalog
    from ltrr.components import ComponentContext, PlanView
    from ltrr.compiler import load_plan
    from ltrr_plugins.policies.epsilon_greedy import EpsilonGreedyPolicy
    from ltrr_plugins.policies.static import StaticPolicy
    from ltrr_plugins.policies.uniform import UniformPolicy
    from ltrr_plugins.policies.vw import VWPolicy

    classes = {"uniform": UniformPolicy, "epsilon_greedy": EpsilonGreedyPolicy, "vw": VWPolicy,
               "static": StaticPolicy}
    plan = load_plan(c.MUSIC_SPEC)
    m = plan.model.catalog
    catalog = Catalog(plan.spec.resolve(m.path), m.id, m.format)
    view = PlanView(arms=ARMS, slotters=("understand",), budget=BUDGET, output_k=10,
                    arm_max_k={a: 1000 for a in ARMS})
    tmp = Path(tempfile.mkdtemp(prefix="bench-policy-"))

    def build(name: str, use: str, params: dict):
        cls = classes[use]
        arms = params.pop("_arms", ARMS)
        budget = params.pop("_budget", BUDGET)
        pview = view if (arms, budget) == (ARMS, BUDGET) else PlanView(
            arms=arms, slotters=("understand",), budget=budget, output_k=10,
            arm_max_k={a: 1000 for a in arms})
        if use != "static":
            params = {"features": FEATURES, **params, "user_tags": "tags"}
        ctx = ComponentContext(name.replace(" ", "_").replace(",", ""), tmp / name,
                               plan.spec.base_dir, lambda: catalog, pview)
        pol = cls(cls.Params.model_validate(params), ctx)
        pol.open()
        return pol

    n_learn = 256 * args.learn_batches
    pool = contexts(args.warmup + args.decisions + n_learn + 256, args.seed, catalog)
    metrics, details = [], {"configs": {}}
    try:
        static = build("static", "static", {"allocation": {"lexical": 60, "memory": 40}})
        for label, use, params in CONFIGS:
            c.log(f"{label}: learn {n_learn} decisions, then time predictions")
            pol = build(label, use, dict(params))
            rng = random.Random(args.seed)
            learn_ctx = pool[args.warmup + args.decisions:][:n_learn]
            learn_s = []
            for i in range(0, n_learn, 256):
                frame = interactions(pol, learn_ctx[i:i + 256], rng)
                t = perf_counter()
                pol.learn(frame)
                learn_s.append(perf_counter() - t)
            learn_ms = c.median(learn_s) * 1000 / 256
            single, base = [], []
            gc.collect()
            gc.disable()
            try:
                for i, cx in enumerate(pool[: args.warmup + args.decisions]):
                    t = perf_counter()
                    pol.choose_batch([cx])
                    t1 = perf_counter()
                    static.choose_batch([cx])
                    t2 = perf_counter()
                    if i >= args.warmup:
                        single.append((t1 - t) * 1000)
                        base.append((t2 - t1) * 1000)
            finally:
                gc.enable()
            batch = pool[-256:]
            t = perf_counter()
            pol.choose_batch(batch)
            batch_ms = (perf_counter() - t) * 1000 / len(batch)
            p50 = c.median(single)
            total = p50 + learn_ms
            is_target = label.startswith(("vw epsilon (default)", "vw music-bandit"))
            metrics.append(c.metric(
                f"{label}: learn+predict per decision ({len(pol.space)} actions)", total, "ms",
                target=f"< {TARGET_MS} ms" if is_target else None,
                passed=(total < TARGET_MS) if is_target else None,
                baseline=c.median(base), baseline_name="static choose_batch p50",
                note=f"predict p50 {p50:.4f} ms (p95 {c.percentile(single, 95):.4f}), "
                     f"batch-256 predict {batch_ms:.4f} ms/decision, learn {learn_ms:.4f} "
                     f"ms/decision (batches of 256)"))
            details["configs"][label] = {
                "actions": len(pol.space), "predict_single_ms": c.summary(single),
                "predict_batch256_ms_per_decision": round(batch_ms, 4),
                "learn_ms_per_decision": round(learn_ms, 4),
                "learn_batch_seconds": c.summary(learn_s),
                "static_baseline_ms": c.summary(base)}
            pol.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    details.update({"decisions": args.decisions, "warmup": args.warmup,
                    "learned_decisions": n_learn, "features": FEATURES, "seed": args.seed})
    c.emit(c.result("policy", "Learning policies: predict + learn overhead per decision",
                    metrics, details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
