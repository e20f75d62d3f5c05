"""The work behind ``ltrr index``, ``ltrr run`` and ``ltrr evaluate``: progress bars,
output formats, and the report of queries that lost an arm.

Offline commands open the pipeline without deadlines unless asked (``--deadlines``): a
batch job wants every arm's answer, not a latency budget, and a loaded machine or a cold
JVM must not change its results. An arm can still fail; every query that lost one is
named on stderr, and ``--strict`` makes that an error.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ltrr import json_text
from ltrr.compiler import Plan
from ltrr.components import Indexed
from ltrr.errors import RunError
from ltrr.runtime.indexing import build_state
from ltrr.runtime.pipeline import Pipeline, new_request_id
from ltrr.runtime.queries import read_queries
from ltrr.runtime.request_ids import check_unused
from ltrr.runtime.workspace import Workspace
from ltrr.types import Decision, Query


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


def index_plan(plan: Plan, *, force: bool = False) -> dict[str, Any]:
    """Build every indexed node's state, skipping those already current."""
    console = Console(stderr=True)
    workspace = Workspace(plan)
    nodes = [(n, workspace.instantiate(n)) for n in plan.nodes]
    nodes = [(n, c) for n, c in nodes if isinstance(c, Indexed)]
    report: dict[str, Any] = {}
    if not nodes:
        console.print("nothing to index: no node of this pipeline keeps an index")
        return report
    try:
        with _progress(console) as progress:
            for node, comp in nodes:
                task = progress.add_task(f"{node.id} ({node.registration.name})", total=None)

                def update(done: int, total: int, task=task) -> None:
                    progress.update(task, completed=done, total=total)

                stats = build_state(comp, update, force=force)
                if stats is None:
                    progress.update(task, total=1, completed=1)
                report[node.id] = stats
    finally:
        workspace.close()
    for node_id, stats in report.items():
        what = "up to date (use --force to rebuild)" if stats is None else \
            ", ".join(f"{k}={v}" for k, v in stats.items())
        console.print(f"[bold]{node_id}[/bold]: {what}")
    return report


def answer(pipeline: Pipeline, queries: list[Query], batch_size: int = 256) -> list[Decision]:
    """Run ``queries`` in batches, with a progress bar when there is more than one batch."""
    size = max(1, batch_size)
    batches = [queries[i:i + size] for i in range(0, len(queries), size)]
    show = len(batches) > 1
    decisions: list[Decision] = []
    with (_progress(Console(stderr=True)) if show else nullcontext()) as progress:
        task = progress.add_task("queries", total=len(queries)) if show else None
        for batch in batches:
            decisions.extend(pipeline.run_batch(batch))
            if show:
                progress.advance(task, len(batch))
    return decisions


def run_queries(plan: Plan, args) -> list[Decision]:
    """Answer ``--query``/``--queries`` and write results in the chosen format."""
    if args.queries:
        queries = read_queries(args.queries)
    else:
        queries = [Query(new_request_id(), q, args.user) for q in args.query]
    with Pipeline(plan, log_decisions=False if args.no_log else None,
                  deadlines=getattr(args, "deadlines", False)) as pipeline:
        if args.queries and pipeline.log is not None:   # a request id names one decision
            check_unused(pipeline.log, [q.request_id for q in queries], args.queries)
        decisions = answer(pipeline, queries, args.batch_size)
        titles = _titles(pipeline, decisions) if args.format == "table" else {}
    k = args.k or plan.model.output.k
    out: TextIO = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        if args.format == "table":
            print_table(decisions, titles, k, Console(file=out) if args.output else Console())
        elif args.format == "jsonl":
            for d in decisions:
                out.write(json.dumps(decision_json(d, k), ensure_ascii=False) + "\n")
        else:
            write_trec(decisions, out, plan.model.name, k)
    finally:
        if args.output:
            out.close()
    fail_if_strict(report_losses(decisions)[1], getattr(args, "strict", False))
    return decisions


def report_losses(decisions: list[Decision], err: TextIO | None = None
                  ) -> tuple[dict[str, int], list[str]]:
    """Name on stderr every query that lost an arm (or a slotter's slots), one line per
    loss, then a summary line per kind of loss. Returns arm id → queries that lost it,
    and the summaries (empty: nothing was lost)."""
    err = err or sys.stderr
    arms: dict[str, int] = {}
    lost_arm = lost_slots = 0
    for d in decisions:
        for note in d.trace:
            err.write(f"warning: request {d.request_id} ({d.query.text!r}): {note}\n")
        for arm in d.dropped:
            arms[arm] = arms.get(arm, 0) + 1
        lost_arm += bool(d.dropped)
        lost_slots += any(note.startswith("slotter '") for note in d.trace)
    total = len(decisions)
    problems = []
    if lost_arm:
        problems.append(f"{lost_arm} of {total} queries lost an arm ("
                        + ", ".join(f"{a}: {n}" for a, n in sorted(arms.items())) + ")")
    if lost_slots:
        problems.append(f"{lost_slots} of {total} queries lost a slotter's slots")
    for problem in problems:
        err.write(f"warning: {problem}\n")
    return arms, problems


def fail_if_strict(problems: list[str], strict: bool) -> None:
    """``--strict``: a query that lost an arm or slots makes the command fail."""
    if strict and problems:
        raise RunError("; ".join(problems) + " and --strict is set",
                       hint="the warnings above name each query and what it lost")


def write_trec(decisions: list[Decision], out: TextIO, tag: str, k: int | None = None) -> None:
    for d in decisions:
        for r in d.ranking[:k]:
            out.write(f"{d.request_id} Q0 {r.entity_id} {r.rank} {r.score:.6f} {tag}\n")


def evaluate_plan(plan: Plan, args) -> dict[str, Any]:
    """``ltrr evaluate``: answer the judged queries, score the ranking with ir-measures.

    ``--by FIELD`` also scores each group of queries sharing a value of that JSONL field;
    ``--per-arm`` also scores each arm's own candidate list (``Decision.candidates``).
    """
    from ltrr.evaluation import (
        DEFAULT_MEASURES, arm_runs, evaluate_breakdown, evaluate_run, groups_by,
        parse_measures, print_evaluation, read_qrels, read_query_fields, run_of)

    by = getattr(args, "by", None)
    per_arm = getattr(args, "per_arm", False)
    qrels = read_qrels(args.qrels)
    measures = args.measures or list(DEFAULT_MEASURES)
    parse_measures(measures)    # fail on a bad measure name before running anything
    queries = [q for q in read_queries(args.queries) if q.request_id in qrels]
    if not queries:
        raise RunError("no query id in the query file has judgements in the qrels",
                       hint="check that both files use the same query ids")
    groups = None
    if by:                      # fail on a bad --by before running anything
        groups = groups_by(read_query_fields(args.queries), [q.request_id for q in queries],
                           by, args.queries)
    with Pipeline(plan, log_decisions=False,
                  deadlines=getattr(args, "deadlines", False)) as pipeline:
        decisions = answer(pipeline, queries, args.batch_size)
    dropped, problems = report_losses(decisions)
    if args.run:
        with open(args.run, "w", encoding="utf-8") as f:
            write_trec(decisions, f, plan.model.name)
    run = run_of(decisions)
    result = evaluate_run(run, qrels, measures)
    totals = [d.timings_ms["total"] for d in decisions]
    result["median_ms_per_query"] = sorted(totals)[len(totals) // 2]
    result["pipeline"] = plan.model.name
    result["spec_hash"] = plan.spec.hash
    result["dropped_arms"] = dropped       # arm id → queries scored without it
    if by or per_arm:
        arms = arm_runs(decisions, [a.id for a in plan.arms]) if per_arm else None
        result.update(evaluate_breakdown(run, qrels, measures, groups=groups, arms=arms))
        if by:
            result["by"] = by
    if args.json:
        print(json_text.dumps({k: v for k, v in result.items() if k != "per_query"}, indent=2))
    else:
        print_evaluation(result, plan.model.name, len(queries), Console())
    fail_if_strict(problems, getattr(args, "strict", False))
    return result


def _titles(pipeline: Pipeline, decisions: list[Decision]) -> dict[str, str]:
    column = pipeline.plan.model.catalog.title
    if not column:
        return {}
    catalog = pipeline.catalog
    values = catalog.frame[column]
    wanted = {r.entity_id for d in decisions for r in d.ranking}
    rows = {e: catalog.row_of(e) for e in wanted}
    return {e: str(values[i]) for e, i in rows.items() if i is not None}


def decision_json(d: Decision, k: int) -> dict[str, Any]:
    return {
        "request_id": d.request_id, "query": d.query.text,
        "slots": [{"slot": s.name, "value": s.value, "score": round(s.score, 4)}
                  for s in d.slots],
        "allocation": d.action.allocation, "probability": d.action.probability,
        "results": [{"rank": r.rank, "id": r.entity_id, "score": r.score,
                     "arms": {c.arm: c.rank for c in r.sources}} for r in d.ranking[:k]],
        "timings_ms": {key: round(v, 3) for key, v in d.timings_ms.items()},
        "trace": d.trace,
        "dropped": d.dropped,
    }


def print_table(decisions: list[Decision], titles: dict[str, str], k: int,
                console: Console) -> None:
    from rich.table import Table

    for d in decisions:
        slots = ", ".join(f"{s.name}={s.value}" for s in d.slots) or "none"
        alloc = " + ".join(f"{a} {n}" for a, n in d.action.allocation.items())
        table = Table(title=f"[bold]{d.query.text}[/bold]  (slots: {slots}; arms: {alloc}; "
                            f"{d.timings_ms.get('total', 0):.1f} ms)",
                      title_justify="left", box=None)
        table.add_column("#", justify="right")
        table.add_column("id")
        if titles:
            table.add_column("title")
        table.add_column("score", justify="right")
        table.add_column("found by")
        for r in d.ranking[:k]:
            found = ", ".join(f"{c.arm}@{c.rank}" for c in r.sources)
            row = [str(r.rank), r.entity_id] + ([titles.get(r.entity_id, "")] if titles else [])
            table.add_row(*row, f"{r.score:.4f}", found)
        if not d.ranking:
            console.print(f"[bold]{d.query.text}[/bold]: no results")
        else:
            console.print(table)
        for note in d.trace:
            console.print(f"  [yellow]note:[/yellow] {note}")
        console.print()
