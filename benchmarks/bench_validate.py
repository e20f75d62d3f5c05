"""Wall time of ``ltrr validate pipelines/music.yaml``, interpreter start included.

Runs the CLI as a subprocess N times (default 15), interleaved with the same number of
``python -c pass`` runs of the same interpreter, the baseline: the ratio and the extra
milliseconds show what ltrr itself costs on top of starting Python on this machine at
this moment. Two unmeasured warm-up runs of each fill the OS page cache and the
``__pycache__``. One extra ``-X importtime`` run lists the most expensive imports.

Target: median < 1 s.

    .venv/bin/python benchmarks/bench_validate.py [--runs 15] [--out FILE]
"""

from __future__ import annotations

import subprocess
import sys
import time

import _common as c

TARGET_MS = 1000.0


def wall_ms(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=c.ROOT, capture_output=True, text=True)
    return (time.perf_counter() - t) * 1000.0, proc


def top_imports(cmd: list[str], n: int = 8) -> list[dict]:
    """Top-level imports of one ``python -X importtime`` run of ``cmd``, by cumulative time."""
    proc = subprocess.run([sys.executable, "-X", "importtime", *cmd], cwd=c.ROOT,
                          capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        # "import time:  <self us> | <cumulative us> | <two spaces per level><module>"
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3:
            continue
        name = parts[2][1:]
        if name.startswith(" "):          # nested import: counted in its parent
            continue
        try:
            rows.append({"module": name.strip(), "cumulative_ms": round(int(parts[1]) / 1000, 1)})
        except ValueError:                # the header line
            continue
    rows.sort(key=lambda r: -r["cumulative_ms"])
    return rows[:n]


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=15)
    args = p.parse_args()
    started = time.perf_counter()

    ltrr = str(c.venv_bin("ltrr"))
    spec = str(c.MUSIC_SPEC.relative_to(c.ROOT))
    validate = [ltrr, "validate", spec]
    baseline = [sys.executable, "-c", "pass"]

    for _ in range(2):  # warm-up, not measured
        wall_ms(validate)
        wall_ms(baseline)
    v_ms: list[float] = []
    b_ms: list[float] = []
    failure = None
    for i in range(args.runs):
        ms, proc = wall_ms(validate)
        if proc.returncode != 0:
            failure = f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"
            break
        v_ms.append(ms)
        b_ms.append(wall_ms(baseline)[0])
        c.log(f"validate run {i + 1}/{args.runs}: {ms:.0f} ms (baseline {b_ms[-1]:.0f} ms)")

    if failure:
        metrics = [c.metric("validate wall time (median)", None, "ms", target="< 1000 ms",
                            passed=False, note=failure)]
        c.emit(c.result("validate", "ltrr validate pipelines/music.yaml", metrics,
                        {"error": failure}, started=started), args.out)
        return 1

    v50, v90 = c.median(v_ms), c.percentile(v_ms, 90)
    b50 = c.median(b_ms)
    metrics = [
        c.metric("validate wall time (median)", v50, "ms", target="< 1000 ms",
                 passed=v50 < TARGET_MS, baseline=b50, baseline_name="python -c pass",
                 note=f"+{v50 - b50:.0f} ms over bare interpreter start", digits=1),
        c.metric("validate wall time (p90)", v90, "ms", baseline=c.percentile(b_ms, 90),
                 baseline_name="python -c pass, p90", digits=1),
    ]
    details = {"runs": args.runs, "command": " ".join(validate),
               "validate_ms": c.summary(v_ms, 1), "baseline_ms": c.summary(b_ms, 1),
               "extra_ms_median": round(v50 - b50, 1),
               "top_imports": top_imports(validate)}
    c.emit(c.result("validate", "ltrr validate pipelines/music.yaml (subprocess, N="
                    f"{args.runs})", metrics, details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
