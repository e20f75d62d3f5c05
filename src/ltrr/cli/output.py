"""Everything the command line shows: tables, progress bars, warnings, JSON.

The runtime, evaluation, OPE and simulation return data; this module is the only place
that turns it into text on a terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from ltrr import json_text
from ltrr.errors import RunError
from ltrr.types import Decision


def stderr() -> Console:
    return Console(stderr=True)


def print_json(data: Any) -> None:
    print(json_text.dumps(data, indent=2, default=str))


# --- progress ------------------------------------------------------------------------------

def _bar(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)


@contextmanager
def index_progress() -> Iterator[Any]:
    """A bar per node being indexed: yields the callback of ``runtime.batch.index_plan``."""
    tasks: dict[str, Any] = {}
    with _bar(stderr()) as bar:
        def update(node_id: str, name: str, done: int, total: int | None) -> None:
            if node_id not in tasks:
                tasks[node_id] = bar.add_task(f"{node_id} ({name})", total=None)
            bar.update(tasks[node_id], completed=done, total=total)

        yield update


@contextmanager
def query_progress(batch_size: int) -> Iterator[Any]:
    """Yields a ``(done, total)`` callback that shows a bar over the queries once it is
    told there is more than one batch of them; else nothing is shown."""
    bar: Progress | None = None
    task = None

    def update(done: int, total: int) -> None:
        nonlocal bar, task
        if bar is None:
            if total <= max(1, batch_size):
                return
            bar = _bar(stderr())
            bar.start()
            task = bar.add_task("queries", total=total)
        bar.update(task, completed=done)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()


@contextmanager
def simulation_progress() -> Iterator[Any]:
    """Bars for sampling and for each policy of ``ltrr simulate`` (with its recall), or
    for the runs done when another executor runs them."""
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=stderr(), transient=False) as bar:
        def update(label: str, done: int, total: int, stats: dict[str, Any]) -> None:
            if label not in tasks:
                name = {"sessions": "sampling sessions", "runs": "runs"}.get(
                    label, f"policy {label}")
                tasks[label] = bar.add_task(name, total=total, note="")
            note = f"recall {stats['recall']:.3f}" if "recall" in stats else ""
            bar.update(tasks[label], completed=done, note=note)

        yield update


# --- index, run ------------------------------------------------------------------------------

def print_index_report(report: Mapping[str, Any]) -> None:
    console = stderr()
    if not report:
        console.print("nothing to index: no node of this pipeline keeps an index")
    for node_id, stats in report.items():
        what = "up to date (use --force to rebuild)" if stats is None else \
            ", ".join(f"{k}={v}" for k, v in stats.items())
        console.print(f"[bold]{node_id}[/bold]: {what}")


def print_decisions(decisions: list[Decision], titles: dict[str, str], k: int,
                    console: Console) -> None:
    """``ltrr run``'s table: one per query, with slots, allocation and provenance."""
    for d in decisions:
        slots = ", ".join(f"{s.name}={s.value}" for s in d.slots) or "none"
        alloc = " + ".join(f"{a} {n}" for a, n in d.action.allocation.items())
        table = Table(title=f"[bold]{d.query.text}[/bold]  (slots: {slots}; arms: {alloc}; "
                            f"{d.timings_ms.get('total', 0):.1f} ms)",
                      title_justify="left", box=None)
        typed = any(r.entity_type is not None for r in d.ranking)
        table.add_column("#", justify="right")
        table.add_column("id")
        if typed:
            table.add_column("type")
        if titles:
            table.add_column("title")
        table.add_column("score", justify="right")
        table.add_column("found by")
        for r in d.ranking[:k]:
            found = ", ".join(f"{c.arm}@{c.rank}" for c in r.sources)
            row = [str(r.rank), r.entity_id] + ([r.entity_type or ""] if typed else []) \
                + ([titles.get(r.entity_id, "")] if titles else [])
            table.add_row(*row, f"{r.score:.4f}", found)
        if not d.ranking:
            console.print(f"[bold]{d.query.text}[/bold]: no results")
        else:
            console.print(table)
        for note in d.trace:
            console.print(f"  [yellow]note:[/yellow] {note}")
        console.print()


def warn_losses(lost, err: TextIO | None = None) -> None:
    """Name on stderr every query that lost an arm or slots, then one line per kind."""
    err = err or sys.stderr
    for request_id, text, note in lost.notes:
        err.write(f"warning: request {request_id} ({text!r}): {note}\n")
    for problem in lost.problems:
        err.write(f"warning: {problem}\n")


def fail_if_strict(problems: list[str], strict: bool) -> None:
    """``--strict``: a query that lost an arm or slots makes the command fail."""
    if strict and problems:
        raise RunError("; ".join(problems) + " and --strict is set",
                       hint="the warnings above name each query and what it lost")


# --- evaluate -------------------------------------------------------------------------------

def print_evaluation(result: dict[str, Any], name: str, console: Console | None = None
                     ) -> None:
    """The tables of ``ltrr evaluate``: overall, by group, and per arm (one per measure)."""
    console = console or Console()
    measures = list(result["measures"])
    groups = result.get("groups")
    arms = result.get("arms")
    title = f"{name}: {result['queries']} judged queries"
    if groups is None and arms is None:
        table = Table("measure", "value", title=title, title_justify="left", box=None)
        for m, value in result["measures"].items():
            table.add_row(m, f"{value:.4f}")
        console.print(table)
        return
    # (label, queries, the ranking's measures, the group key into arms' entries or None)
    rows = [(g, e["queries"], e["measures"], g) for g, e in (groups or {}).items()]
    rows.append(("all", result["judged_queries"], result["measures"], None))
    label = result.get("by", "")
    console.print(f"[bold]{title}[/bold]: the ranking" + (f", by {label}" if label else ""))
    table = Table(label or "queries", "n", *measures, box=None)
    for column in table.columns[1:]:
        column.justify = "right"
    for g, n, values, _ in rows:
        table.add_row(g, str(n), *(f"{values[m]:.4f}" for m in measures))
    console.print(table)
    if not arms:
        return
    for m in measures:
        console.print()
        console.print(f"[bold]{m}[/bold] of the ranking and of each arm's candidates"
                      + (f", by {label}" if label else ""))
        table = Table(label or "queries", "n", "ranking", *arms, box=None)
        for column in table.columns[1:]:
            column.justify = "right"
        for g, n, values, key in rows:
            per_arm = [(arms[a] if key is None else arms[a]["groups"][key])["measures"][m]
                       for a in arms]
            table.add_row(g, str(n), f"{values[m]:.4f}", *(f"{v:.4f}" for v in per_arm))
        console.print(table)


def print_ope_table(report: Mapping[str, Any], console: Console | None = None) -> None:
    """An OPE report as a table: one row per estimator, then diagnostics."""
    console = console or Console()
    ci = report.get("ci", {})
    level = int(round(100 * ci.get("level", 0.95)))
    how = (f"bootstrap, {ci.get('resamples')} resamples, seed {ci.get('seed')}"
           if ci.get("method") == "bootstrap" else "normal approximation")
    title = "off-policy value"
    if report.get("policy"):
        title += f" of '{report['policy']}'"
    table = Table("estimator", "value", f"{level}% CI", "CI width", "s.e.", title=title,
                  caption=f"CI: {how}")
    for name, e in report["estimates"].items():
        flag = "" if e.get("reliable", True) else " (unreliable)"
        table.add_row(name.upper() + flag, f"{e['value']:.4f}",
                      f"[{e['low']:.4f}, {e['high']:.4f}]", f"{e['high'] - e['low']:.4f}",
                      f"{e['se']:.4f}", style="yellow" if flag else None)
    table.add_row("logged", f"{report['logged_value']:.4f}", "", "", "",
                  style="dim")
    console.print(table)
    d = report["diagnostics"]
    lines = [f"decisions {report['n']}" + (f" (skipped {report['skipped']} with probability 0)"
                                          if report.get("skipped") else ""),
             f"effective sample size {d['ess']:.1f}", f"max weight {d['max_weight']:.3g}",
             f"mean weight {d['mean_weight']:.3f}"]
    if d.get("clip") is not None:
        lines.append(f"clipped {d['clipped']} at {d['clip']}")
    if d.get("unsupported_mass"):
        lines.append(f"unsupported mass {d['unsupported_mass']:.3f}")
    if report.get("without_reward"):
        lines.append(f"{report['without_reward']} decisions without a reward "
                     f"(counted as {report.get('missing_reward')})")
    if "reward_model" in d:
        lines.append(f"DR model {d['reward_model']} ({d['folds']} folds), "
                     f"direct method {d['direct_method']:.4f}")
    console.print(" · ".join(lines))
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


# --- feedback, train, simulate ---------------------------------------------------------------

def print_learners(learners: Mapping[str, Any], idle: str = "") -> None:
    """One line per learner: its flat stats (``idle`` when it had nothing to learn), and a
    ranker's retraining."""
    for node, stats in learners.items():
        flat = {k: v for k, v in (stats or {}).items() if not isinstance(v, dict)}
        print(f"{node}: " + (", ".join(f"{k}={v}" for k, v in flat.items())
                             if stats or not idle else idle))
        training = (stats or {}).get("training")
        if isinstance(training, dict):
            print_training(node, training)


def print_training(node: str, t: Mapping[str, Any]) -> None:
    """A ranker's retraining: its held-out MRR / nDCG@10 against the fused order."""
    held = t.get("holdout")
    status = "deployed" if t.get("deployed") else f"not deployed ({t.get('reason')})"
    print(f"{node}: {t.get('requests')} judged requests over {t.get('queries')} queries "
          f"({t.get('rows')} rows), {t.get('seconds')} s: {status}")
    if held:
        m, f = held["model"], held["fused"]
        print(f"  held out: the {held['queries']} queries judged last ({held['requests']} "
              f"requests):  MRR {m['mrr']:.4f} (fused {f['mrr']:.4f})  nDCG@10 "
              f"{m['ndcg@10']:.4f} (fused {f['ndcg@10']:.4f})")
    if t.get("warning"):
        Console(stderr=True).print(f"[yellow]warning:[/yellow] {node}: {t['warning']}",
                                   highlight=False)


def print_simulation(summary: Mapping[str, Any], out: Path) -> None:
    """``ltrr simulate``'s table: recall, regret and speed per policy."""
    table = Table("policy", "recall", "best fixed", "type oracle", "regret/1k Q1→Q4 (fixed)",
                  "regret/1k Q1→Q4 (oracle)", "MRR", "ms/session", box=None)
    for label, p in summary["policies"].items():
        rb = p["regret"]["per_1000_by_quarter"]["vs_best_fixed"]
        ro = p["regret"]["per_1000_by_quarter"]["vs_type_oracle"]
        table.add_row(label, f"{p['recall']:.4f}", f"{p['best_fixed']['recall']:.4f}",
                      f"{p['oracle_per_type']['recall']:.4f}", f"{rb[0]:.1f} → {rb[-1]:.1f}",
                      f"{ro[0]:.1f} → {ro[-1]:.1f}", f"{p['mrr']:.4f}",
                      f"{p['timings']['ms_per_session']:.1f}")
    console = Console()
    console.print(table)
    best = summary["best_static"]
    console.print(f"best fixed allocation in hindsight: {best['allocation']} "
                  f"(recall {best['recall']:.4f})")
    console.print(f"wrote {out}/summary.json, sessions.parquet, "
                  + ", ".join(Path(p).name for p in summary["plots"].values()))


def print_sweep(summary: Mapping[str, Any], out: Path) -> None:
    """``ltrr simulate --seeds``: per policy, means across seeds and paired differences."""
    ref = summary["reference"]
    table = Table("policy", "recall", "by seed", f"− {ref}", "− best fixed", "MRR", box=None)
    for label, p in summary["policies"].items():
        diff = p.get(f"minus_{ref}")
        best = p["minus_best_fixed"]
        table.add_row(label, f"{p['recall']:.4f}", " ".join(f"{r:.4f}" for r in p["recall_by_seed"]),
                      f"{diff['mean']:+.4f} ± {diff['se']:.4f}" if diff else "—",
                      f"{best['mean']:+.4f} ± {best['se']:.4f}", f"{p['mrr']:.4f}")
    console = Console()
    console.print(table)
    seeds = ", ".join(str(s) for s in summary["seeds"])
    console.print(f"{summary['sessions']} sessions × seeds {seeds}; ± the seeds' paired "
                  "standard errors combined")
    console.print(f"wrote {out}/summary.json and each seed's report in {out}/seed-<s>/")
