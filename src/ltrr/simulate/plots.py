"""PNG plots of a simulation (matplotlib, Agg): regret, recall over time, arm shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ltrr import extras
from ltrr.errors import RunError


def _pyplot():
    extras.require(extras.PLOTS, "the simulation's plots", RunError)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mark_shifts(ax, changes: list[float], n: int) -> None:
    for c in changes:
        ax.axvline(c * n, color="grey", linestyle=":", linewidth=1)


def moving_average(values, window: int):
    """Trailing mean over ``window`` values (shorter at the start)."""
    import numpy as np

    c = np.cumsum(np.concatenate([[0.0], np.asarray(values, dtype=np.float64)]))
    i = np.arange(1, len(values) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def plot_all(summary: dict[str, Any], series: dict[str, dict[str, Any]], out: Path
             ) -> dict[str, str]:
    """Write regret.png, recall.png and arm_share.png into ``out``; return their paths."""
    import numpy as np

    plt = _pyplot()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = summary["sessions"]
    changes = summary.get("mix_changes") or []
    x = np.arange(1, n + 1)
    paths = {}

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, title in ((axes[0], "best", "vs best fixed allocation in hindsight"),
                           (axes[1], "oracle", "vs per-query-type oracle")):
        for label, s in series.items():
            ax.plot(x, np.cumsum(s[key] - s["reward"]), label=label)
        _mark_shifts(ax, changes, n)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_title(f"Cumulative regret {title}")
        ax.set_xlabel("session")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cumulative regret (sessions)")
    axes[0].legend()
    fig.tight_layout()
    paths["regret"] = str(out / "regret.png")
    fig.savefig(paths["regret"], dpi=110)
    plt.close(fig)

    window = max(50, n // 20)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, s in series.items():
        ax.plot(x, moving_average(s["reward"], window), label=label)
    first = next(iter(series.values()))
    ax.plot(x, moving_average(first["best"], window), color="black", linestyle="--",
            linewidth=1, label="best fixed (hindsight)")
    ax.plot(x, moving_average(first["oracle"], window), color="black", linestyle=":",
            linewidth=1, label="per-type oracle")
    _mark_shifts(ax, changes, n)
    ax.set_title(f"Candidate recall (moving average over {window} sessions)")
    ax.set_xlabel("session")
    ax.set_ylabel("target in candidate set")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths["recall"] = str(out / "recall.png")
    fig.savefig(paths["recall"], dpi=110)
    plt.close(fig)

    arms = summary["arms"]
    labels = list(series)
    fig, axes = plt.subplots(1, len(labels), figsize=(4.5 * len(labels) + 1, 4.5), squeeze=False,
                             sharey=True)
    for ax, label in zip(axes[0], labels):
        shares = summary["policies"][label]["arm_share_by_type"]
        types = list(shares)
        bottom = np.zeros(len(types))
        for a in arms:
            v = np.array([shares[t][a] for t in types])
            ax.bar(types, v, bottom=bottom, label=a)
            bottom += v
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=45)
    axes[0][0].set_ylabel("share of the candidate budget")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("Each arm's share of the budget by query type")
    fig.tight_layout()
    paths["arm_share"] = str(out / "arm_share.png")
    fig.savefig(paths["arm_share"], dpi=110)
    plt.close(fig)
    return paths
