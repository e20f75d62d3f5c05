"""The commands of ``ltrr``: each loads what it needs (heavy modules inside), asks the
runtime, evaluation, OPE or simulation for data, and shows it through
:mod:`ltrr.cli.output`."""

from __future__ import annotations

import sys
from pathlib import Path


def init(args) -> int:
    from ltrr.compiler import load_plan
    from ltrr.errors import RunError
    from ltrr.init_spec import write_spec
    from ltrr.state import atomic_write_bytes

    catalog = args.catalog
    name = catalog.name.split(".")[0] or "spec"
    out = args.out or catalog.with_name(f"{name}.yaml")
    if out.exists() and not args.force:
        raise RunError(f"{out} already exists", hint="choose another --out, or --force to "
                       "overwrite it")
    text = write_spec(catalog, out, interactions=args.interactions,
                      id_column=args.id_column, name=args.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode())
    plan = load_plan(out)                          # what init writes validates
    arms = ", ".join(a.id for a in plan.arms)
    print(f"wrote {out}: pipeline '{plan.model.name}', arms {arms}")
    print(f"next:  ltrr index {out}")
    print(f"       ltrr run {out} -q \"<a query>\"")
    return 0


def validate(args) -> int:
    from ltrr.compiler import load_plan

    plan = load_plan(args.spec)
    m = plan.model
    types = plan.view.arm_types
    arms = ", ".join(a.id + (f" ({'/'.join(types[a.id])})" if types.get(a.id) else "")
                     for a in plan.arms)
    kinds = f"entity types {', '.join(plan.view.types)}; " if plan.view.types else ""
    print(f"ok: {args.spec}: pipeline '{m.name}' — {kinds}{len(plan.slotters)} slotter(s), "
          f"{len(plan.arms)} arm(s) [{arms}], "
          f"policy {m.policy.use} (budget {m.policy.budget}), merge {m.merge.use}, "
          f"ranker {m.ranker.use}")
    return 0


def schema(args) -> int:
    import json

    from ltrr.spec.models import PipelineSpec

    schema = PipelineSpec.model_json_schema(by_alias=True)
    if args.components:
        from ltrr.registry import default_registry

        schema["x-ltrr-components"] = {
            f"{r.kind.value}:{r.name}": r.cls.Params.model_json_schema()
            for r in default_registry().all()}
    print(json.dumps(schema, indent=2))
    return 0


def plugins(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ltrr import extras
    from ltrr.registry import default_registry

    table = Table("kind", "name", "package", "version", "summary", box=None)
    for r in default_registry().all():
        absent = extras.missing(r.cls.requires)
        summary = r.summary + (f" (needs: {extras.install_hint(absent)})" if absent else "")
        table.add_row(r.kind.value, r.name, r.package, r.version, escape(summary))
    Console().print(table)
    return 0


def graph(args) -> int:
    from ltrr.compiler import load_plan
    from ltrr.runtime.graphviz import draw_png, mermaid

    plan = load_plan(args.spec)
    print(mermaid(plan))
    if args.png:
        draw_png(plan, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def index(args) -> int:
    from ltrr.cli import output
    from ltrr.compiler import load_plan
    from ltrr.runtime.batch import index_plan

    plan = load_plan(args.spec)
    with executor(args) as ex, output.index_progress() as progress:
        report = index_plan(plan, force=args.force, progress=progress, executor=ex)
    output.print_index_report(report)
    return 0


def run(args) -> int:
    import json

    from rich.console import Console

    from ltrr.cli import output
    from ltrr.compiler import load_plan
    from ltrr.runtime.batch import decision_json, losses, run_queries, trec_lines
    from ltrr.runtime.pipeline import new_request_id
    from ltrr.runtime.queries import read_queries
    from ltrr.types import Query

    plan = load_plan(args.spec)
    if args.queries:
        queries = read_queries(args.queries)
    else:
        queries = [Query(new_request_id(), q, args.user) for q in args.query]
    with output.query_progress(args.batch_size) as progress:
        decisions, titles = run_queries(
            plan, queries, log=False if args.no_log else None, deadlines=args.deadlines,
            batch_size=args.batch_size, source=args.queries,
            with_titles=args.format == "table", progress=progress)
    k = args.k or plan.model.output.k
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        if args.format == "table":
            output.print_decisions(decisions, titles, k,
                                   Console(file=out) if args.output else Console())
        elif args.format == "jsonl":
            for d in decisions:
                out.write(json.dumps(decision_json(d, k), ensure_ascii=False) + "\n")
        else:
            out.writelines(trec_lines(decisions, plan.model.name, k))
    finally:
        if args.output:
            out.close()
    lost = losses(decisions)
    output.warn_losses(lost)
    output.fail_if_strict(lost.problems, args.strict)
    return 0


def feedback(args) -> int:
    from ltrr.compiler import load_plan
    from ltrr.feedback.ingest import ingest_file

    report = ingest_file(load_plan(args.spec), args.events)
    print(f"{report['new']} new of {report['received']} events logged")
    if report.get("learned_by"):
        from ltrr.feedback.learning_lock import describe

        print(f"learning them is left to the server that learns this pipeline: "
              f"{describe(report['learned_by'])}")
    for node, stats in report["learners"].items():
        print(f"{node}: " + ", ".join(f"{k}={v}" for k, v in (stats or {}).items()))
    return 0


def train(args) -> int:
    from ltrr.compiler import load_plan
    from ltrr.feedback.train import train

    with executor(args) as ex:
        report = train(load_plan(args.spec), args.log, nodes=args.node,
                       quarantine_invalid=args.quarantine_invalid, executor=ex)
    moved = report.get("quarantined")
    if moved is not None:
        print(f"moved {sum(moved.values())} events with invalid timestamps out of "
              f"{len(moved)} event-log parts to events/quarantine/")
    print(f"replayed {report['log']}")
    from ltrr.cli.output import print_learners

    print_learners(report["learners"], idle="nothing new to learn")
    return 0


def evaluate(args) -> int:
    from ltrr.compiler import load_plan
    from ltrr.errors import RunError

    plan = load_plan(args.spec)
    if args.log is not None:
        if args.queries or args.qrels:
            raise RunError("--log (off-policy evaluation) and --queries/--qrels (judged "
                           "queries) are two different evaluations", hint="use one of them")
        return evaluate_log(plan, args)
    if not (args.queries and args.qrels):
        raise RunError("evaluate needs --queries and --qrels, or --log",
                       hint="e.g. ltrr evaluate spec.yaml --queries q.jsonl --qrels qrels.tsv")
    from ltrr.cli import output
    from ltrr.runtime.batch import evaluate_plan

    with executor(args) as ex, output.query_progress(args.batch_size) as progress:
        result, lost = evaluate_plan(
            plan, args.queries, args.qrels, measures=args.measures, by=args.by,
            per_arm=args.per_arm, deadlines=args.deadlines, batch_size=args.batch_size,
            run_path=args.run, progress=progress, executor=ex)
    output.warn_losses(lost)
    if args.json:
        output.print_json({k: v for k, v in result.items() if k != "per_query"})
    else:
        output.print_evaluation(result, plan.model.name)
    output.fail_if_strict(lost.problems, args.strict)
    return 0


def evaluate_log(plan, args) -> int:
    from ltrr.cli import output
    from ltrr.ope import ope_report
    from ltrr.runtime.workspace import Workspace

    workspace = Workspace(plan)
    try:
        report = ope_report(plan, args.log, workspace.opened(plan.policy.id))
    finally:
        workspace.close()
    if args.json:
        output.print_json(report)
    else:
        output.print_ope_table(report)
    return 0


def serve(args) -> int:
    from ltrr import extras
    from ltrr.errors import RunError

    extras.require(extras.SERVE, "`ltrr serve`", RunError)
    from ltrr.serve.config import ServeConfig, admin_token
    from ltrr.serve.server import serve

    return serve(ServeConfig(
        spec=args.spec, host=args.host, port=args.port, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, max_query_chars=args.max_query_chars,
        max_search_bytes=args.max_search_bytes, max_feedback_bytes=args.max_feedback_bytes,
        max_events=args.max_events, learn_interval_ms=args.learn_interval_ms,
        log_level=args.log_level, access_log=args.access_log, workers=args.workers,
        max_connections=args.max_connections, header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout, keepalive_timeout_s=args.keepalive_timeout,
        max_header_bytes=args.max_header_bytes, allowed_hosts=tuple(args.allowed_host),
        allowed_origins=tuple(args.allow_origin),
        admin_token=admin_token(args.admin_token_file)))


def simulate(args) -> int:
    from ltrr.cli import output
    from ltrr.compiler import load_plan
    from ltrr.registry import default_registry
    from ltrr.simulate.engine import SimConfig
    from ltrr.simulate.options import (default_out, losses, parse_seeds, parse_with,
                                       policy_choices, ranker_choices, with_rankers)
    from ltrr.simulate.report import write_sweep
    from ltrr.simulate.sweep import sweep

    plan = load_plan(args.spec)
    registry = default_registry()
    seeds = parse_seeds(args.seeds, args.seed)
    out = Path(args.out) if args.out else default_out(plan, args, seeds)
    config = SimConfig(sessions=args.sessions, seed=seeds[0], round_size=args.round_size,
                       step=args.step, max_arms=args.max_arms,
                       keep_state=out / "state" if args.keep_state else None)
    choices = with_rankers(policy_choices(plan, args.policies, registry),
                           ranker_choices(plan, args.rankers, registry))
    with executor(args) as ex, output.simulation_progress() as progress:
        results = sweep(plan, args.user_model, parse_with(args.with_), choices, config, seeds,
                        registry=registry, progress=progress, executor=ex)
    summary = write_sweep(results, out)
    lost = [x for result in results for x in losses(result)]
    for line, _ in lost:
        print(f"warning: {line}", file=sys.stderr)
    if args.json:
        output.print_json(summary)
    elif len(results) > 1:
        output.print_sweep(summary, out)
    else:
        output.print_simulation(summary, out)
    output.fail_if_strict([problem for _, problem in lost], args.strict)
    return 0


def executor(args):
    """The executor ``--executor``/``--workers`` name (a context manager)."""
    from ltrr.executors import open_executor, parse_executor

    return open_executor(parse_executor(args.executor, args.workers))
