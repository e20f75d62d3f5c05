"""BEIR SciFact effectiveness through ltrr's own path: Anserini's BM25 figures reproduced.

Runs, as a user would, ``ltrr index pipelines/scifact-bm25.yaml`` (a no-op when the
index is current) and then ``ltrr evaluate pipelines/scifact-bm25.yaml --queries
../shared/data/beir-scifact/queries.jsonl.gz --qrels .../qrels/test.tsv.gz --json``
(ir-measures underneath), and compares with Anserini's BEIR "flat" BM25 reference:
nDCG@10 = 0.6789, R@100 = 0.9253, each within 0.002 (absolute difference reported).
Also reports the index and evaluation wall times and the median ms per query.

When ../shared/data/beir-scifact is missing the benchmark fails (exit 1) naming it.

    .venv/bin/python benchmarks/bench_scifact.py [--force-index] [--out FILE]
"""

from __future__ import annotations

import json
import subprocess
import sys
from time import perf_counter

import _common as c

REFERENCE = {"nDCG@10": 0.6789, "R@100": 0.9253}
TOLERANCE = 0.002
DATA = c.SHARED_DATA / "beir-scifact"
FILES = ("corpus.jsonl.gz", "queries.jsonl.gz", "qrels/test.tsv.gz")


def run(cmd: list[str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    c.log("$ " + " ".join(cmd))
    t = perf_counter()
    proc = subprocess.run(cmd, cwd=c.ROOT, capture_output=True, text=True, timeout=timeout)
    return perf_counter() - t, proc


def main() -> int:
    p = c.parser(__doc__.splitlines()[0])
    p.add_argument("--force-index", action="store_true", help="rebuild the index first")
    args = p.parse_args()
    started = perf_counter()
    title = "BEIR SciFact BM25 (flat) vs Anserini reference"

    c.require_data(DATA, FILES)

    ltrr = str(c.venv_bin("ltrr"))
    spec = str(c.SCIFACT_SPEC.relative_to(c.ROOT))
    index_cmd = [ltrr, "index", spec] + (["--force"] if args.force_index else [])
    index_s, proc = run(index_cmd, timeout=1800)
    error = None
    if proc.returncode != 0:
        error = f"`ltrr index` failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}"
    else:
        c.log(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "")
        eval_cmd = [ltrr, "evaluate", spec, "--queries", str(DATA / "queries.jsonl.gz"),
                    "--qrels", str(DATA / "qrels" / "test.tsv.gz"), "--json"]
        eval_s, proc = run(eval_cmd, timeout=1800)
        if proc.returncode != 0:
            error = f"`ltrr evaluate` failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}"
        else:
            out = proc.stdout
            try:   # the JSON document is the whole stdout; tolerate stray lines before it
                report = json.loads(out[out.index("{"):])
            except ValueError as exc:
                error = f"cannot parse `ltrr evaluate --json` output ({exc}): {out[:300]!r}"
    if error:
        c.log(error)
        metrics = [c.metric(f"SciFact {m}", None, target=f"{ref} ± {TOLERANCE}", passed=False,
                            note="error") for m, ref in REFERENCE.items()]
        c.emit(c.result("scifact", title, metrics, {"error": error}, started=started), args.out)
        return 1

    measures = report["measures"]
    metrics, diffs = [], {}
    for name, ref in REFERENCE.items():
        value = measures.get(name)
        diff = None if value is None else abs(value - ref)
        diffs[name] = None if diff is None else round(diff, 5)
        metrics.append(c.metric(
            f"SciFact {name}", value, target=f"{ref} ± {TOLERANCE}",
            passed=diff is not None and diff <= TOLERANCE, baseline=ref,
            baseline_name="Anserini BEIR reference", ratio=None if value is None else value / ref,
            note="missing from the report" if value is None else f"|diff| = {diff:.5f}"))
    metrics.append(c.metric("SciFact evaluate: median time per query", report.get(
        "median_ms_per_query"), "ms", note=f"batch size 256; evaluate wall {eval_s:.1f} s, "
                                           f"index wall {index_s:.1f} s"))
    details = {
        "measures": measures, "abs_diff": diffs, "reference": REFERENCE, "tolerance": TOLERANCE,
        "queries": report.get("queries"), "judged_queries": report.get("judged_queries"),
        "spec_hash": report.get("spec_hash"), "index_wall_s": round(index_s, 2),
        "evaluate_wall_s": round(eval_s, 2), "data": str(DATA),
        "commands": [" ".join(index_cmd), " ".join(eval_cmd)],
    }
    c.emit(c.result("scifact", title, metrics, details, started=started), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
