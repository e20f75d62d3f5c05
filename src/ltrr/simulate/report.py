"""Write a simulation's outputs: summary.json, sessions.parquet and the PNG plots; for a
sweep over several seeds, those of each seed under ``seed-<s>/`` and a summary across
seeds (means, paired standard errors)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ltrr.json_text import finite
from ltrr.simulate.engine import SimResult
from ltrr.simulate.plots import plot_all
from ltrr.simulate.regret import account
from ltrr.state import atomic_write_bytes, atomic_write_json


def write_report(result: SimResult, out: Path) -> dict[str, Any]:
    """Account for ``result`` and write everything under ``out``; return the summary."""
    return _write(result, out)[0]


def _write(result: SimResult, out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import io

    import polars as pl

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary, series = account(result, result.config.step, result.config.max_arms)
    summary["plots"] = plot_all(summary, series, out)
    frames = []
    s = result.sessions
    for run in result.runs:
        ser = series[run.label]
        frames.append(pl.DataFrame({
            "policy": [run.label] * len(s),
            "session": list(range(len(s))),
            "user_id": [x.user_id for x in s], "target": [x.target for x in s],
            "type": [x.type for x in s], "query": [x.text for x in s],
            "allocation": [json.dumps({a: int(k) for a, k in zip(result.arms, row) if k})
                           for row in run.alloc.tolist()],
            "reward": run.reward.tolist(), "best_fixed": ser["best"].astype(bool).tolist(),
            "type_oracle": ser["oracle"].astype(bool).tolist(),
            "shown_at": run.shown.tolist(), "clicked": run.clicked.tolist(),
            **{f"rank_{a}": run.ranks[:, j].tolist() for j, a in enumerate(result.arms)},
        }))
    buf = io.BytesIO()
    pl.concat(frames).write_parquet(buf, compression="zstd")
    atomic_write_bytes(out / "sessions.parquet", buf.getvalue())
    summary["files"] = {"summary": str(out / "summary.json"),
                        "sessions": str(out / "sessions.parquet")}
    atomic_write_json(out / "summary.json", finite(summary))     # NaN → null: strict JSON
    return summary, series


def paired(a, b) -> tuple[float, float]:
    """Mean and standard error of ``a − b``, two per-session series of the same sessions."""
    import numpy as np

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(d.mean()), float(d.std()) / math.sqrt(len(d))


def combined(pairs: list[tuple[float, float]]) -> dict[str, float]:
    """The mean of the seeds' paired differences, its SE from theirs combined."""
    mean = sum(m for m, _ in pairs) / len(pairs)
    se = math.sqrt(sum(e * e for _, e in pairs)) / len(pairs)
    return {"mean": round(mean, 4), "se": round(se, 4)}


def write_sweep(results: list[SimResult], out: Path) -> dict[str, Any]:
    """One seed: :func:`write_report` into ``out``. Several: each seed's report into
    ``out/seed-<s>/`` and ``out/summary.json`` across seeds — per policy its mean recall
    and MRR, and its difference from its best fixed allocation and from the first
    policy, each the mean of the seeds' paired differences (policies of a seed face the
    same sessions) ± the seeds' paired SEs combined."""
    if len(results) == 1:
        return write_report(results[0], out)
    out = Path(out)
    per_seed = [(r, *_write(r, out / f"seed-{r.config.seed}")) for r in results]
    labels = [run.label for run in results[0].runs]
    first = labels[0]
    policies: dict[str, Any] = {}
    for k, label in enumerate(labels):
        rows = [(r.runs[k], summ["policies"][label], ser) for r, summ, ser in per_seed]
        recall = [p["recall"] for _, p, _ in rows]
        mrr = [p["mrr"] for _, p, _ in rows]
        entry = {"recall": round(sum(recall) / len(recall), 4), "recall_by_seed": recall,
                 "mrr": round(sum(mrr) / len(mrr), 4), "mrr_by_seed": mrr,
                 "minus_best_fixed": combined([paired(ser[label]["reward"], ser[label]["best"])
                                               for _, _, ser in rows])}
        if label != first:
            entry[f"minus_{first}"] = combined([paired(ser[label]["reward"], ser[first]["reward"])
                                                for _, _, ser in rows])
        policies[label] = entry
    r0 = results[0]
    summary = {"seeds": [r.config.seed for r in results], "sessions": len(r0.sessions),
               "round_size": r0.config.round_size,
               "user_model": {"name": r0.user_model, "params": r0.user_params},
               "arms": list(r0.arms), "budget": r0.budget, "reference": first,
               "policies": policies,
               "per_seed": {str(r.config.seed): str(out / f"seed-{r.config.seed}" /
                                                    "summary.json") for r in results},
               "timings": {"total": r0.timings["total"]}}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", finite(summary))
    return summary
