"""Shared helpers of the benchmark scripts: statistics, query generation, result JSON.

Every bench script produces one JSON document::

    {"bench": "overhead", "title": "...", "skipped": false, "reason": null,
     "metrics": [{"name": ..., "value": ..., "unit": "ms", "target": "< 0.5 ms",
                  "pass": true | false | null, "baseline": ..., "baseline_name": ...,
                  "ratio": ..., "note": ...}, ...],
     "details": {...}, "env": {...}, "seconds": 12.3}

printed on stdout (and written to ``--out FILE`` when given, which is how
``run_all.py`` collects it, immune to anything else a library prints on stdout).
Progress and diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
MUSIC_SPEC = ROOT / "pipelines" / "music.yaml"
SCIFACT_SPEC = ROOT / "pipelines" / "scifact-bm25.yaml"
#: The shared datasets (BEIR SciFact...): ../shared/data, or $LTRR_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("LTRR_SHARED_DATA") or ROOT / ".." / "shared" / "data"
                   ).resolve()


# --------------------------------------------------------------------------- statistics

def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation (numpy's default)."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def summary(values: Sequence[float], digits: int = 4) -> dict[str, float]:
    """n, min, p50, p90, p95, p99, max and mean of ``values``, rounded."""
    r = lambda x: round(x, digits)  # noqa: E731
    return {"n": len(values), "min": r(min(values)), "p50": r(percentile(values, 50)),
            "p90": r(percentile(values, 90)), "p95": r(percentile(values, 95)),
            "p99": r(percentile(values, 99)), "max": r(max(values)),
            "mean": r(sum(values) / len(values))}


# --------------------------------------------------------------------------- metrics

def metric(name: str, value: float | None, unit: str = "", *, target: str | None = None,
           passed: bool | None = None, baseline: float | None = None,
           baseline_name: str | None = None, ratio: float | None = None,
           note: str | None = None, digits: int = 4) -> dict[str, Any]:
    """One row of the results table. ``passed`` is None for informational rows."""
    rnd = lambda x: None if x is None else round(float(x), digits)  # noqa: E731
    if ratio is None and baseline and value is not None:
        ratio = value / baseline
    return {"name": name, "value": rnd(value), "unit": unit, "target": target,
            "pass": passed, "baseline": rnd(baseline), "baseline_name": baseline_name,
            "ratio": None if ratio is None else float(f"{float(ratio):.4g}"), "note": note}


# --------------------------------------------------------------------------- environment

def environment() -> dict[str, Any]:
    """What the numbers depend on: machine, load, interpreter, code version."""
    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "cpus": os.cpu_count(), "executable": sys.executable,
    }
    try:
        env["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        # the run's own outputs (benchmarks/results) are not a change to the code measured
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                "--", ".", ":(exclude)benchmarks/results"],
                               cwd=ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        env["git"] = head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return env


# --------------------------------------------------------------------------- an earlier commit

def reference_commit(against: str) -> str | None:
    """The commit ``--against`` names: ``auto`` is the commit of the last full run
    (``benchmarks/results/latest.json``), or ``HEAD~1`` when that is HEAD itself;
    ``none`` skips the comparison."""
    if against == "none":
        return None

    def rev(ref: str) -> str | None:
        done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", ref + "^{commit}"],
                              cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() or None

    if against != "auto":
        found = rev(against)
        if found is None:
            raise SystemExit(f"--against {against}: no such commit in {ROOT}")
        return found
    head = rev("HEAD")
    latest = ROOT / "benchmarks" / "results" / "latest.json"
    last = None
    if latest.exists():
        commits = json.loads(latest.read_text()).get("commits") or []
        last = rev(commits[0].removesuffix("+dirty")) if len(commits) == 1 else None
    return last if last and last != head else rev("HEAD~1")


def checkout(commit: str, folder: Path) -> Path:
    """A detached worktree of ``commit`` in ``folder``: its ``src`` is served instead of
    the installed package (same interpreter and dependencies)."""
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(folder), commit],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    return folder / "src"


def remove_checkout(folder: Path) -> None:
    """Remove a worktree made by :func:`checkout`."""
    subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT,
                   capture_output=True)


def source_env(source: Path) -> dict[str, str]:
    """The environment that runs another checkout's ``src`` on this interpreter."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(source), *filter(None, [os.environ.get("PYTHONPATH")])])}


def require_data(folder: Path, files: Iterable[str]) -> None:
    """Exit 1 naming what is missing: a benchmark whose data is absent fails, never
    passes as skipped (its target would go unchecked)."""
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        log(f"error: benchmark data not found in {folder} (missing: {', '.join(missing)}); "
            "it comes with the shared data checkout next to the repository "
            "(../shared/data), or set LTRR_SHARED_DATA to its folder")
        sys.exit(1)


def venv_bin(name: str) -> Path:
    """A console script installed next to the running interpreter (e.g. ``ltrr``)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `make install` first")
    return path


# --------------------------------------------------------------------------- CLI / output

def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, help="also write the result JSON to this file")
    p.add_argument("--seed", type=int, default=20240611, help="query sampling seed")
    return p


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print the result JSON on stdout and write it to ``out`` when given."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def result(bench: str, title: str, metrics: list[dict], details: dict | None = None, *,
           started: float, skipped: bool = False, reason: str | None = None) -> dict[str, Any]:
    return {"bench": bench, "title": title, "skipped": skipped, "reason": reason,
            "metrics": metrics, "details": details or {}, "env": environment(),
            "seconds": round(time.perf_counter() - started, 2)}


def log(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- music pipeline

def ensure_music_index(plan) -> dict[str, Any]:
    """Build the music pipeline's indexes if missing or stale (idempotent, cheap if current)."""
    from ltrr.runtime.batch import index_plan

    t = time.perf_counter()
    report = index_plan(plan)
    built = {k: v for k, v in report.items() if v is not None}
    return {"built": built, "seconds": round(time.perf_counter() - t, 3)}


_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)


def music_queries(catalog, n: int, seed: int) -> list[str]:
    """``n`` realistic query texts drawn from the Last.fm catalog, deterministic for ``seed``.

    Mix: 40% artist names (a third of them lowercased, as users type), 30% tags
    (weighted by how many artists carry them), 30% two-word combinations
    (tag word + tag word, artist word + tag, tag + "music"...).
    """
    rng = random.Random(seed)
    frame = catalog.frame
    names = [s for s in frame["name"].to_list() if s and s.strip()]
    tag_lists = frame["tags"].to_list()
    counts: dict[str, int] = {}
    for tags in tag_lists:
        for t in tags or ():
            counts[t] = counts.get(t, 0) + 1
    tags = [t for t, c in counts.items() if c >= 3 and t.strip()]
    weights = [counts[t] for t in tags]
    tag_words = sorted({w.lower() for t in tags for w in _TOKEN.findall(t) if len(w) >= 3})
    name_words = sorted({w.lower() for s in names for w in _TOKEN.findall(s) if len(w) >= 3})
    out: list[str] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.40:
            q = rng.choice(names)
            if rng.random() < 1 / 3:
                q = q.lower()
        elif r < 0.70:
            q = rng.choices(tags, weights)[0]
        else:
            kind = rng.randrange(3)
            if kind == 0:
                q = f"{rng.choice(tag_words)} {rng.choice(tag_words)}"
            elif kind == 1:
                q = f"{rng.choice(name_words)} {rng.choices(tags, weights)[0]}"
            else:
                noun = rng.choice(["music", "songs", "bands", "artists"])
                q = f"{rng.choices(tags, weights)[0]} {noun}"
        out.append(q)
    return out


def chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
