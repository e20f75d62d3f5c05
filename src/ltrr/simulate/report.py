"""Write a simulation's outputs: summary.json, sessions.parquet and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ltrr.json_text import finite
from ltrr.simulate.engine import SimResult
from ltrr.simulate.plots import plot_all
from ltrr.simulate.regret import account
from ltrr.state import atomic_write_bytes, atomic_write_json


def write_report(result: SimResult, out: Path) -> dict[str, Any]:
    """Account for ``result`` and write everything under ``out``; return the summary."""
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
    return summary
