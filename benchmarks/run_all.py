"""Run every benchmark, each in its own subprocess, and tabulate the results.

One after the other (never in parallel: they would disturb each other's timings),
each ``bench_*.py`` writes its JSON to a temporary file; a crash or a timeout is
recorded as an error row and the next benchmark still runs. A full run (every
benchmark, one commit) writes ``benchmarks/results/latest.json`` and the table, printed
here with rich, also to ``benchmarks/results/latest.md``: the only results docs quote.
A run of a subset (``--only``) writes ``partial.json`` / ``partial.md`` instead and never
mixes its rows into the full run's. Every benchmark's result records the commit it ran
on (``commit``; ``+dirty`` when tracked files outside ``benchmarks/results`` were
modified). A full run then rewrites the docs' bench blocks — ``<!-- bench:NAME -->`` ...
``<!-- /bench -->`` in README.md and docs/ — with that benchmark's rows, each figure
linked to latest.md (``--docs`` does only that, from latest.json), so the docs quote
the last full run and nothing else.

Exit status: 0 when every target is met (skipped benchmarks do not count), 1 when a
target is missed or a benchmark failed to run (``--no-fail`` always exits 0).

    .venv/bin/python benchmarks/run_all.py [--only validate,bm25] [--no-fail] [--docs]
    make bench
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import _common as c

BENCHES = {
    "validate": "bench_validate.py",
    "overhead": "bench_overhead.py",
    "bm25": "bench_bm25.py",
    "bm25_structured": "bench_bm25_structured.py",
    "lucene_concurrency": "bench_lucene_concurrency.py",
    "memory": "bench_memory.py",
    "graph": "bench_graph.py",
    "policy": "bench_policy.py",
    "dense": "bench_dense.py",
    "arm_strengths": "bench_arm_strengths.py",
    "simulate": "bench_simulate.py",
    "serve": "bench_serve.py",
    "scifact": "bench_scifact.py",
    "feedback": "bench_feedback.py",
    "event_log_compaction": "bench_event_log_compaction.py",
    "ranker": "bench_ranker.py",
    "movies": "bench_movies.py",
    "generalisation": "bench_generalisation.py",
    "entity_types": "bench_entity_types.py",
    "scale": "bench_scale.py",
    "ray": "bench_ray.py",
    # last: it rewrites its block of docs/scifact-selector.md, a tracked file, so a
    # benchmark after it would be recorded as run on a dirty tree
    "scifact_selector": "bench_scifact_selector.py",
}
#: Seconds a benchmark may run before it is killed (``--timeout`` overrides them all).
DEFAULT_TIMEOUT = 1800.0
TIMEOUTS = {"lucene_concurrency": 600.0, "event_log_compaction": 900.0,
            "scifact_selector": 3600.0, "generalisation": 3600.0, "entity_types": 3600.0,
            "scale": 3600.0, "ray": 3600.0}
RESULTS = c.BENCH_DIR / "results"


def run_bench(name: str, script: str, timeout: float) -> dict[str, Any]:
    """Run one bench script; its result JSON, or an error record."""
    tmp = RESULTS / f"{name}.json.tmp"
    tmp.unlink(missing_ok=True)
    cmd = [sys.executable, str(c.BENCH_DIR / script), "--out", str(tmp)]
    c.log(f"\n=== {name}: {' '.join(cmd[1:2])}")
    tail: deque[str] = deque(maxlen=30)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=c.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    assert proc.stderr is not None

    def echo() -> None:   # progress shown live; the tail kept for error reports
        for line in proc.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            print(f"  [{name}] {line}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()           # our own child, by its handle
        rc = proc.wait()
    reader.join(timeout=10)
    seconds = round(time.perf_counter() - started, 2)
    result = None
    if tmp.exists():
        try:
            result = json.loads(tmp.read_text(encoding="utf-8"))
        except ValueError:
            result = None
        tmp.unlink(missing_ok=True)
    if result is not None and not timed_out:
        result["exit_code"] = rc
        return result
    why = f"timed out after {timeout:.0f} s" if timed_out else f"exit code {rc}, no result"
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    if last:
        why += f": {last[:300]}"
    return {"bench": name, "title": script, "skipped": False, "reason": None,
            "error": why, "stderr_tail": list(tail), "metrics": [], "details": {},
            "exit_code": rc, "seconds": seconds}


# --------------------------------------------------------------------------- formatting

def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        text = f"{value:.3f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"
        return f"{text} ms"
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    if unit == "%":
        return f"{value:.1f} %"
    text = f"{value:,.0f}" if float(value).is_integer() else f"{value:.4f}"   # counts: 16
    return text + (f" {unit}" if unit else "")


def fmt_ratio(ratio: float) -> str:
    """×1.23, or two significant digits below 0.1 (×0.0031, never ×0.00)."""
    return f"×{ratio:.2f}" if abs(ratio) >= 0.1 or ratio == 0 else f"×{ratio:.2g}"


def verdict(m: dict, bench: dict) -> str:
    if bench.get("skipped"):
        return "SKIP"
    if m.get("pass") is None:
        return "—" if not m.get("target") else "?"
    return "PASS" if m["pass"] else "FAIL"


def rows(results: dict[str, dict]) -> list[dict[str, str]]:
    out = []
    for name, bench in results.items():
        if bench.get("error"):
            out.append({"bench": name, "metric": f"{bench.get('title', name)}", "value": "—",
                        "target": "—", "result": "ERROR", "baseline": "—", "ratio": "—",
                        "note": bench["error"]})
            continue
        for m in bench.get("metrics", []):
            base_value = base = "—"
            if m.get("baseline") is not None:
                unit = "" if m["name"].startswith("SciFact") else m["unit"]
                base_value = base = fmt(m["baseline"], unit)
                if m.get("baseline_name"):
                    base += f" ({m['baseline_name']})"
            out.append({
                "bench": name, "metric": m["name"], "value": fmt(m["value"], m["unit"]),
                "target": m.get("target") or "—", "result": verdict(m, bench),
                "baseline": base, "baseline_value": base_value,
                "baseline_name": m.get("baseline_name"),
                "ratio": "—" if m.get("ratio") is None else fmt_ratio(m["ratio"]),
                "note": (bench.get("reason") if bench.get("skipped") else m.get("note")) or "",
            })
    return out


COLUMNS = [("bench", "bench"), ("metric", "metric"), ("value", "median / value"),
           ("target", "target"), ("result", "result"), ("baseline", "baseline (same run)"),
           ("ratio", "ratio"), ("note", "note")]


def print_table(table_rows: list[dict[str, str]], header: str) -> None:
    from rich.console import Console
    from rich.table import Table

    style = {"PASS": "bold green", "FAIL": "bold red", "ERROR": "bold red", "SKIP": "yellow"}
    table = Table(title=header, title_justify="left", show_lines=False)
    for key, title in COLUMNS:
        table.add_column(title, justify="right" if key in ("value", "ratio") else "left",
                         overflow="fold")
    for r in table_rows:
        table.add_row(*[f"[{style[r[k]]}]{r[k]}[/]" if k == "result" and r[k] in style
                        else r[k] for k, _ in COLUMNS])
    Console(width=max(160, Console().width)).print(table)


def cell(text: str) -> str:
    """Text as one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(table_rows: list[dict[str, str]], header_lines: list[str]) -> str:
    lines = [*header_lines, "",
             "| " + " | ".join(t for _, t in COLUMNS) + " |",
             "|" + "|".join("---:" if k in ("value", "ratio") else "---" for k, _ in COLUMNS) + "|"]
    for r in table_rows:
        value = r["result"]
        r = dict(r, result=f"**{value}**" if value in ("FAIL", "ERROR") else value)
        lines.append("| " + " | ".join(cell(r[k]) for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- docs

#: A block of a page the full run rewrites: ``<!-- bench:NAME -->`` (optionally
#: ``match="regex"`` to keep the metrics whose name matches) ... ``<!-- /bench -->``.
DOC_BLOCK = re.compile(r'(<!-- bench:(?P<name>\w+)(?: match="(?P<match>[^"]*)")? -->\n)'
                       r'.*?(<!-- /bench -->)', re.S)


def doc_pages() -> list[Path]:
    return [c.ROOT / "README.md", *sorted((c.ROOT / "docs").rglob("*.md"))]


def bench_block(bench: dict, match: str | None, link: str, doc: dict) -> str:
    """The table of one benchmark's rows, each figure linked to the results page."""
    if bench.get("error"):
        return f"**No figures: this benchmark failed in the last run** ([why]({link})).\n"
    head = (f"Last full `make bench` ([results]({link})): git {bench.get('commit')}, "
            f"{(bench.get('env') or {}).get('cpus')} CPUs, 1-min load "
            f"{doc.get('loadavg_1m_before')} before the run, "
            f"{(bench.get('env') or {}).get('loadavg_1m')} after this benchmark.\n\n")
    lines = ["| metric | value | target | result | baseline (same run) | note |",
             "|---|---:|---|---|---|---|"]
    linked = lambda text: text if text == "—" else f"[{text}]({link})"  # noqa: E731
    for r in rows({"": bench}):
        if match and not re.search(match, r["metric"]):
            continue
        base = linked(r["baseline_value"])
        if r["baseline_name"] and base != "—":
            base += f" ({r['baseline_name']})"
        cells = [r["metric"], linked(r["value"]), r["target"], r["result"], base, r["note"]]
        lines.append("| " + " | ".join(cell(x) for x in cells) + " |")
    return head + "\n".join(lines) + "\n"


def update_docs(doc: dict) -> list[Path]:
    """Rewrite every bench block of the docs from a full run's document; the pages
    changed. A block naming an unknown benchmark is an error."""
    changed = []
    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        link = Path(os.path.relpath(RESULTS / "latest.md", page.parent)).as_posix()

        def fill(m: re.Match) -> str:
            name = m.group("name")
            if name not in doc["benches"]:
                raise SystemExit(f"{page.relative_to(c.ROOT)}: bench block '{name}' names no "
                                 f"benchmark of the run (known: {', '.join(doc['benches'])})")
            return m.group(1) + bench_block(doc["benches"][name], m.group("match"), link,
                                            doc) + m.group(4)

        new = DOC_BLOCK.sub(fill, text)
        if new != text:
            tmp = page.with_name(page.name + ".tmp")
            tmp.write_text(new, encoding="utf-8")
            tmp.replace(page)
            changed.append(page)
    return changed


# --------------------------------------------------------------------------- main

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    p.add_argument("--timeout", type=float, default=None,
                   help=f"seconds per benchmark (default {DEFAULT_TIMEOUT:.0f}, "
                        f"some less: {TIMEOUTS})")
    p.add_argument("--no-fail", action="store_true", help="exit 0 even if a target is missed")
    p.add_argument("--docs", action="store_true", help="run nothing: rewrite the docs' bench "
                   "blocks from benchmarks/results/latest.json (a full run does it itself)")
    args = p.parse_args()
    if args.docs:
        latest = json.loads((RESULTS / "latest.json").read_text(encoding="utf-8"))
        for page in update_docs(latest):
            print(f"rewrote {page.relative_to(c.ROOT)}")
        return 0
    names = list(BENCHES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BENCHES]
        if unknown:
            p.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    env = c.environment()
    load_before = env.get("loadavg_1m")
    started = time.perf_counter()
    results = {name: run_bench(name, BENCHES[name], args.timeout if args.timeout is not None
                               else TIMEOUTS.get(name, DEFAULT_TIMEOUT)) for name in names}
    try:
        load_after = round(os.getloadavg()[0], 2)
    except OSError:
        load_after = None

    for bench in results.values():
        bench["commit"] = (bench.get("env") or {}).get("git") or env.get("git")
    commits = sorted({b["commit"] for b in results.values() if b.get("commit")})
    partial = set(names) != set(BENCHES)
    stem = "partial" if partial else "latest"
    metrics = [(n, m, b) for n, b in results.items() for m in b.get("metrics", [])]
    targets = [(n, m) for n, m, b in metrics if m.get("pass") is not None and not b.get("skipped")]
    failed = [f"{n}: {m['name']}" for n, m in targets if not m["pass"]]
    errors = [f"{n}: {b['error']}" for n, b in results.items() if b.get("error")]
    skipped = [f"{n}: {b.get('reason')}" for n, b in results.items() if b.get("skipped")]
    summary = {"targets": len(targets), "passed": len(targets) - len(failed),
               "failed": failed, "errors": errors, "skipped": skipped}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    doc = {"generated_at": now, "partial": partial, "commits": commits,
           "env": env, "loadavg_1m_before": load_before,
           "loadavg_1m_after": load_after, "seconds": round(time.perf_counter() - started, 1),
           "summary": summary, "benches": results}

    tmp = RESULTS / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(RESULTS / f"{stem}.json")

    table_rows = rows(results)
    header = (f"ltrr benchmarks — {now} — git {env.get('git', '?')} — "
              f"{env.get('cpus')} CPUs, load {load_before} → {load_after} — "
              f"Python {env.get('python')}")
    if partial:
        header = f"PARTIAL ({', '.join(names)}) — " + header
    if len(commits) > 1:
        header += f" — benchmarks ran on {len(commits)} commits: {', '.join(commits)}"
    verdict_line = (f"{summary['passed']}/{summary['targets']} targets met"
                    + (f"; {len(errors)} error(s)" if errors else "")
                    + (f"; {len(skipped)} skipped" if skipped else ""))
    md_header = [
        "# ltrr benchmark results" + (" — partial run" if partial else ""), "",
        f"- generated: {now} by " + (f"`benchmarks/run_all.py --only {','.join(names)}` "
                                     "(a subset: docs quote latest.md, a full run)"
                                     if partial else "`make bench` (`benchmarks/run_all.py`)"),
        f"- code: git {', '.join(commits) or env.get('git', '?')}; Python {env.get('python')} "
        f"on {env.get('platform')}",
        f"- machine: {env.get('cpus')} CPUs, shared and noisy: 1-min load average "
        f"{load_before} before, {load_after} after",
        "- values are medians unless the metric says otherwise; baselines are measured in "
        "the same run, ratio = value / baseline",
        f"- **{verdict_line}**",
    ]
    tmp = RESULTS / f"{stem}.md.tmp"
    tmp.write_text(markdown(table_rows, md_header), encoding="utf-8")
    tmp.replace(RESULTS / f"{stem}.md")

    print_table(table_rows, header)
    print(verdict_line)
    for line in (*failed, *errors):
        print(f"  missed: {line}" if line in failed else f"  error: {line}")
    for line in skipped:
        print(f"  skipped: {line}")
    print(f"wrote {(RESULTS / f'{stem}.json').relative_to(c.ROOT)} and "
          f"{(RESULTS / f'{stem}.md').relative_to(c.ROOT)}")
    if not partial:
        for page in update_docs(doc):
            print(f"rewrote {page.relative_to(c.ROOT)} (its bench blocks)")
    return 0 if args.no_fail or not (failed or errors) else 1


if __name__ == "__main__":
    sys.exit(main())
