"""Regret accounting: the reward of every allocation, hindsight baselines, the JSON summary.

A session's reward under allocation ``k`` (arm → candidates) is 1 when some arm ``a``
ranks the target within ``k[a]`` — known exactly from the probe's full-budget ranks.
Baselines, per policy run (each run's learners saw that run's feedback):

* **best fixed**: the one allocation of the comparator set with the highest total
  reward over the run, in hindsight;
* **per-type oracle**: the best allocation for each query type, in hindsight;
* **per-session oracle**: the best allocation for each session (an upper bound).

The comparator set is every allocation of the budget in multiples of ``step`` over at
most ``max_arms`` arms (each within its ``max_k``), plus every allocation a policy chose.
Regret is the baseline's reward minus the policy's, summed over sessions.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from ltrr.errors import RunError
from ltrr.simulate.engine import PolicyRun, SimResult

MAX_COMPARATORS = 50_000


def default_step(budget: int) -> int:
    """The comparator grid step: budget / g for the largest divisor g ≤ 10 of the budget."""
    g = max(d for d in range(1, min(10, budget) + 1) if budget % d == 0)
    return budget // g


def allocation_grid(arms: tuple[str, ...], budget: int, step: int, max_arms: int,
                    max_k: dict[str, int]) -> list[tuple[int, ...]]:
    """Every allocation of ``budget`` in multiples of ``step`` over ≤ ``max_arms`` arms."""
    if step <= 0 or budget % step:
        raise RunError(f"step {step} does not divide the budget {budget}", field="--step",
                       hint=f"a divisor of {budget}, e.g. {default_step(budget)}")
    units = budget // step
    n = len(arms)
    count = sum(math.comb(n, m) * math.comb(units - 1, m - 1)
                for m in range(1, min(max_arms, n, units) + 1))
    if count > MAX_COMPARATORS:
        raise RunError(f"the comparator grid would hold {count:,} allocations", field="--step",
                       hint="raise --step or lower --max-arms")
    caps = [max_k.get(a, budget) // step for a in arms]
    out = []
    for m in range(1, min(max_arms, n, units) + 1):
        for chosen in itertools.combinations(range(n), m):
            # compositions of `units` into m positive parts
            for cuts in itertools.combinations(range(1, units), m - 1):
                parts = [b - a for a, b in zip((0,) + cuts, cuts + (units,))]
                if any(p > caps[j] for p, j in zip(parts, chosen)):
                    continue
                row = [0] * n
                for p, j in zip(parts, chosen):
                    row[j] = p * step
                out.append(tuple(row))
    return out


def rewards(ranks, grid):
    """(S, M) bool: does allocation m put session s's target in the candidate set."""
    import numpy as np

    k = np.asarray(grid, dtype=np.int32)                       # (M, A)
    r = np.asarray(ranks, dtype=np.int32)                      # (S, A)
    out = np.zeros((r.shape[0], k.shape[0]), dtype=bool)
    for j in range(r.shape[1]):                                # OR over arms, (S, M) each
        rj = r[:, j:j + 1]
        out |= (rj > 0) & (rj <= k[None, :, j])
    return out


def _alloc_dict(arms, row) -> dict[str, int]:
    return {a: int(k) for a, k in zip(arms, row) if k}


def _quarters(n: int):
    import numpy as np

    return np.array_split(np.arange(n), 4)


def account(result: SimResult, step: int | None = None, max_arms: int | None = None
            ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The JSON summary, and per run the series the plots need."""
    import numpy as np

    arms, budget = result.arms, result.budget
    step = step or default_step(budget)
    max_arms = max_arms or len(arms)
    max_k = dict(result.probe)
    grid = allocation_grid(arms, budget, step, max_arms, max_k)
    chosen = {tuple(int(x) for x in row) for run in result.runs
              for row in np.unique(run.alloc, axis=0)}
    grid = grid + sorted(chosen - set(grid))
    types = np.array([s.type for s in result.sessions])
    type_names = [t for t in result.types if (types == t).any()] + sorted(
        set(types.tolist()) - set(result.types))
    n = len(result.sessions)
    quarters = _quarters(n)

    summary: dict[str, Any] = {
        "sessions": n, "seed": result.config.seed, "round_size": result.config.round_size,
        "user_model": {"name": result.user_model, "params": result.user_params},
        "arms": list(arms), "budget": budget, "probe_allocation": result.probe,
        "comparators": {"step": step, "max_arms": max_arms, "size": len(grid)},
        "query_types": {t: int((types == t).sum()) for t in type_names},
        "query_types_by_quarter": [{t: int((types[q] == t).sum()) for t in type_names}
                                   for q in quarters],
        "mix_changes": result.mix_changes,
        "policies": {}, "timings": result.timings,
    }
    kinds = None
    if result.target_types is not None:
        # a typed catalog: recall also by the type of entity the user wanted
        kinds = np.array([t or "(none)" for t in result.target_types])
        summary["target_entity_types"] = {k: int((kinds == k).sum())
                                          for k in sorted(set(kinds.tolist()))}
    series: dict[str, dict[str, Any]] = {}
    for run in result.runs:
        summary["policies"][run.label], series[run.label] = _account_run(
            run, grid, arms, budget, types, type_names, quarters, kinds)
    best = max(summary["policies"].items(), key=lambda kv: kv[1]["best_fixed"]["recall"])
    summary["best_static"] = {"policy_run": best[0], **best[1]["best_fixed"]}
    return summary, series


def _account_run(run: PolicyRun, grid, arms, budget, types, type_names, quarters,
                 kinds=None):
    import numpy as np

    R = rewards(run.ranks, grid)                               # (S, M)
    got = run.reward.astype(np.float64)
    m_best = int(R.sum(axis=0).argmax())
    best = R[:, m_best]
    oracle = np.zeros(len(got), dtype=bool)
    per_type_alloc = {}
    for t in type_names:
        rows = types == t
        m = int(R[rows].sum(axis=0).argmax())
        oracle[rows] = R[rows, m]
        per_type_alloc[t] = _alloc_dict(arms, grid[m])
    session_oracle = R.any(axis=1)
    index = {row: m for m, row in enumerate(grid)}
    chosen_m = np.array([index[tuple(int(x) for x in row)] for row in run.alloc])
    computed = R[np.arange(len(got)), chosen_m]
    mismatches = int((computed != run.reward).sum())
    reg_best = best - got
    reg_oracle = oracle - got

    def by_type(values) -> dict[str, float]:
        return {t: round(float(values[types == t].mean()), 4) for t in type_names}

    def per_1000(reg) -> list[float]:
        return [round(1000 * float(reg[q].sum()) / max(len(q), 1), 2) for q in quarters]

    share = run.alloc / float(budget)
    rr = np.where(run.shown > 0, 1.0 / np.maximum(run.shown, 1), 0.0)
    summary = {
        "use": run.use, "params": run.params,
        "recall": round(float(got.mean()), 4),
        "recall_by_quarter": [round(float(got[q].mean()), 4) for q in quarters],
        "recall_by_type": by_type(got),
        "clicked": round(float(run.clicked.mean()), 4),
        "target_shown": round(float((run.shown > 0).mean()), 4),
        # reciprocal rank of the target in the final ranking (0 when not shown): the
        # ranker's figure, as the candidate recall is the policy's
        "mrr": round(float(rr.mean()), 4),
        "mrr_by_quarter": [round(float(rr[q].mean()), 4) for q in quarters],
        "mrr_by_type": by_type(rr),
        "ranker": run.ranker,
        "best_fixed": {"allocation": _alloc_dict(arms, grid[m_best]),
                       "recall": round(float(best.mean()), 4),
                       "recall_by_quarter": [round(float(best[q].mean()), 4) for q in quarters],
                       "recall_by_type": by_type(best)},
        "oracle_per_type": {"allocations": per_type_alloc,
                            "recall": round(float(oracle.mean()), 4),
                            "recall_by_type": by_type(oracle)},
        "oracle_per_session": {"recall": round(float(session_oracle.mean()), 4)},
        "regret": {
            "vs_best_fixed": round(float(reg_best.sum()), 2),
            "vs_type_oracle": round(float(reg_oracle.sum()), 2),
            "per_1000_by_quarter": {"vs_best_fixed": per_1000(reg_best),
                                    "vs_type_oracle": per_1000(reg_oracle)},
        },
        "arm_share_by_type": {t: {a: round(float(share[types == t, j].mean()), 4)
                                  for j, a in enumerate(arms)} for t in type_names},
        "arm_recall_at_budget": {a: round(float((run.ranks[:, j] > 0).mean()), 4)
                                 for j, a in enumerate(arms)},
        "reward_check": {"mismatches": mismatches, "note": (
            "sessions whose candidate-set reward differs from the one computed from the "
            "probe's ranks for the chosen allocation (0 when arms' lists are prefixes of "
            "their full-budget lists)")},
        "timings": run.timings,
        "dropped_arms": dict(run.dropped),    # arm → answers (served, probed) without it
    }
    if kinds is not None:
        def by_kind(values) -> dict[str, float]:
            return {k: round(float(values[kinds == k].mean()), 4)
                    for k in sorted(set(kinds.tolist()))}

        summary["recall_by_entity_type"] = by_kind(got)
        summary["best_fixed"]["recall_by_entity_type"] = by_kind(best)
    if run.state_dir:
        summary["state_dir"] = run.state_dir
    series = {"reward": got, "best": best.astype(np.float64), "oracle": oracle.astype(np.float64),
              "share": share, "types": types, "rr": rr}
    return summary, series

