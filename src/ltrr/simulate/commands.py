"""``ltrr simulate``: parse the options, run with a rich progress display, print a table."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ltrr import json_text
from ltrr.compiler import Plan
from ltrr.errors import RunError
from ltrr.registry import Registry, default_registry
from ltrr.runtime.commands import fail_if_strict
from ltrr.simulate.engine import PolicyChoice, SimConfig, simulate


def parse_with(items: list[str] | None) -> dict[str, Any]:
    """``["eta=0.5", "mix={exact: 1}"]`` → params; values are YAML (numbers, lists, maps)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RunError(f"--with '{item}' is not key=value", field="--with",
                           hint="e.g. --with eta=0.5 --with 'mix={exact: 1, tag: 1}'")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            raise RunError(f"--with {key}: value is not valid YAML ({exc.problem})",
                           field=f"with.{key.strip()}",
                           hint="quote structured values: --with 'mix={exact: 1}'") from None
    return out


def component_blocks(kind, text: str, spec_use: str, spec_with: dict[str, Any], option: str,
                     example: str, registry: Registry) -> list[tuple[str, dict[str, Any], str | None]]:
    """``(label, {use, with}, source file)`` for each item of a comma-separated option:
    registered names of ``kind`` or YAML files holding a block (``use``, optional ``with``
    and ``label``, default the file's stem). A name runs with the spec's ``with`` when the
    spec uses it, else with its defaults."""
    from ltrr.spec.loader import load_yaml

    noun = kind.value
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if item.endswith((".yaml", ".yml")):
            path = Path(item)
            data, _ = load_yaml(path)
            if not isinstance(data, dict) or not isinstance(data.get("use"), str) \
                    or set(data) - {"use", "with", "label"} \
                    or not isinstance(data.get("with", {}), dict):
                raise RunError(f"a {noun} file holds a mapping with 'use' (a {noun} name), "
                               "optional 'with' (its params) and optional 'label'",
                               where=str(path), field=option, hint=f"e.g. {example}")
            out.append((str(data.get("label") or path.stem),
                        {"use": data["use"], "with": dict(data.get("with") or {})}, str(path)))
        elif registry.find(kind, item) is not None:
            out.append((item, {"use": item, "with": dict(spec_with) if item == spec_use else {}},
                        None))
        else:
            close = registry.closest(kind, item)
            raise RunError(f"unknown {noun} '{item}'", field=option,
                           hint=(f"did you mean '{close}'? " if close else "")
                           + "installed: " + ", ".join(registry.names(kind))
                           + f"; or give a YAML file with a {noun} block")
    return out


def policy_choices(plan: Plan, text: str | None, registry: Registry | None = None
                   ) -> list[PolicyChoice]:
    """``--policies``: registered policy names or YAML files holding a policy block
    (see :func:`component_blocks`). Default: the spec's own policy."""
    from ltrr.components import Kind

    spec_policy = plan.model.policy
    if not text:
        return [PolicyChoice(spec_policy.use, spec_policy.use, dict(spec_policy.with_))]
    blocks = component_blocks(Kind.POLICY, text, spec_policy.use, spec_policy.with_,
                              "--policies", "{use: static, with: {allocation: {lexical: 100}}, "
                              "label: lexical}", registry or default_registry())
    return [PolicyChoice(label, b["use"], b["with"], source=src) for label, b, src in blocks]


def ranker_choices(plan: Plan, text: str | None, registry: Registry | None = None
                   ) -> list[tuple[str, dict[str, Any]]]:
    """``--rankers``: ``(label, ranker block)`` pairs (see :func:`component_blocks`)."""
    from ltrr.components import Kind

    spec_ranker = plan.model.ranker
    blocks = component_blocks(Kind.RANKER, text or "", spec_ranker.use, spec_ranker.with_,
                              "--rankers", "{use: lightgbm, with: {popularity: popularity}}",
                              registry or default_registry())
    return [(label, b) for label, b, _ in blocks]


def with_rankers(policies: list[PolicyChoice], rankers: list[tuple[str, dict[str, Any]]]
                 ) -> list[PolicyChoice]:
    """Every policy with every ranker (labels ``policy+ranker`` when several rankers)."""
    if not rankers:
        return policies
    return [PolicyChoice(p.label if len(rankers) == 1 else f"{p.label}+{label}", p.use,
                         dict(p.params), p.source, block)
            for p in policies for label, block in rankers]


def default_out(plan: Plan, args) -> Path:
    return plan.spec.state_dir / "simulations" / f"{args.user_model}-n{args.sessions}-s{args.seed}"


def simulate_command(plan: Plan, args, registry: Registry | None = None) -> dict[str, Any]:
    """Run ``ltrr simulate`` for parsed ``args``; print a table (or JSON); return the summary."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.table import Table

    from ltrr.simulate.report import write_report

    registry = registry or default_registry()
    out = Path(args.out) if args.out else default_out(plan, args)
    config = SimConfig(sessions=args.sessions, seed=args.seed, round_size=args.round_size,
                       step=args.step, max_arms=args.max_arms,
                       keep_state=out / "state" if args.keep_state else None)
    choices = with_rankers(policy_choices(plan, args.policies, registry),
                           ranker_choices(plan, getattr(args, "rankers", None), registry))
    err = Console(stderr=True)
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err, transient=False) as bar:
        def progress(label: str, done: int, total: int, stats: dict[str, Any]) -> None:
            if label not in tasks:
                name = "sampling sessions" if label == "sessions" else f"policy {label}"
                tasks[label] = bar.add_task(name, total=total, note="")
            note = f"recall {stats['recall']:.3f}" if "recall" in stats else ""
            bar.update(tasks[label], completed=done, note=note)

        result = simulate(plan, args.user_model, parse_with(args.with_), choices, config,
                          registry=registry, progress=progress)
    summary = write_report(result, out)
    losses = _report_losses(result)
    strict = getattr(args, "strict", False)
    if args.json:
        print(json_text.dumps(summary, indent=2))
        fail_if_strict(losses, strict)
        return summary
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
    fail_if_strict(losses, strict)
    return summary


def _report_losses(result) -> list[str]:
    """One stderr line per policy and arm that some answers lost (a count and the first
    request); returns the losses. The simulation waits for every arm (no serving
    deadlines), so a loss is an arm that failed."""
    problems = []
    for run in result.runs:
        for arm, n in sorted(run.dropped.items()):
            rid, note = run.first_loss.get(arm, ("?", ""))
            line = (f"policy {run.label}: arm '{arm}' lost in {n} answers (served and probed); "
                    f"first: request {rid}: {note}")
            print(f"warning: {line}", file=sys.stderr)
            problems.append(f"policy {run.label} lost arm '{arm}' in {n} answers")
    return problems
