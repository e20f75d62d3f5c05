"""The benchmark suite's own rules (the benchmarks run in `make bench`, not here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_make_bench_runs_every_benchmark_script():
    """A full `make bench` is every bench_*.py: none can be left out of the run (two had no
    recorded row while docs quoted their targets)."""
    scripts = {p.name for p in (ROOT / "benchmarks").glob("bench_*.py")}
    assert set(_run_all().BENCHES.values()) == scripts
