"""The ``ltrr`` command line. Every user error prints one ``error:`` line and exits 1.

Each command calls the runtime, evaluation, OPE or simulation for data and shows it
through :mod:`ltrr.cli.output`, the one place that prints. Heavy modules are imported
inside the commands so ``ltrr validate`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ltrr import __version__
from ltrr.errors import LtrrError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except LtrrError as exc:
        lines = str(exc).splitlines()
        print(f"error: {lines[0]}", file=sys.stderr)
        for line in lines[1:]:
            print(f"error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ltrr", description=(
        "Learning to rank and retrieve: declare a retrieval funnel in YAML and run it."))
    p.add_argument("--version", action="version", version=f"ltrr {__version__}")
    sub = p.add_subparsers(metavar="command")

    def cmd(name: str, func, help: str, spec: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        if spec:
            sp.add_argument("spec", type=Path, help="pipeline spec (YAML)")
        sp.set_defaults(func=func)
        return sp

    cmd("validate", _validate, "Check a spec without loading anything heavy (exit 0 or 1).")

    sp = cmd("schema", _schema, "Print the JSON Schema of pipeline specs (for editors).",
             spec=False)
    sp.add_argument("--components", action="store_true",
                    help="also print the params schema of every registered component")

    cmd("plugins", _plugins, "List registered components and the packages providing them.",
        spec=False)

    sp = cmd("graph", _graph, "Print the compiled plan as a Mermaid flowchart; optionally a PNG.")
    sp.add_argument("--png", type=Path, help="also draw the plan into this PNG file")

    sp = cmd("index", _index, "Build the state (indexes) of every arm that needs one.")
    sp.add_argument("--force", action="store_true", help="rebuild even if up to date")

    sp = cmd("run", _run, "Answer queries with the pipeline and print the ranked results.")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--query", "-q", action="append", help="a query (repeatable)")
    src.add_argument("--queries", type=Path,
                     help="TSV (id<TAB>query) or JSONL ({id, query, user_id}) file of queries")
    sp.add_argument("--user", help="user id for --query requests")
    sp.add_argument("--format", choices=["table", "jsonl", "trec"], default="table")
    sp.add_argument("--k", type=int, help="results per query (default: output.k of the spec)")
    sp.add_argument("--output", "-o", type=Path, help="write results here instead of stdout")
    sp.add_argument("--no-log", action="store_true", help="do not append to the decision log")
    sp.add_argument("--batch-size", type=int, default=256)
    _loss_options(sp)

    sp = cmd("feedback", _feedback, "Ingest feedback events (JSONL or Parquet) and learn from "
             "them; replaying a file adds nothing twice.")
    sp.add_argument("events", type=Path, help="events file")

    sp = cmd("train", _train, "Replay a decision + event log into the pipeline's learners "
             "(offline learning); replaying the same log twice adds nothing.")
    sp.add_argument("--log", type=Path, metavar="DIR",
                    help="state folder holding decisions/ and events/ (default: the "
                         "pipeline's own)")
    sp.add_argument("--node", action="append", metavar="ID",
                    help="train only this learner (repeatable; default: all learners)")
    sp.add_argument("--quarantine-invalid", action="store_true",
                    help="first move logged events with invalid timestamps (NaN, infinite, "
                         "before 1970, beyond feedback.max_future_s) to events/quarantine/")

    sp = cmd("evaluate", _evaluate, "Run judged queries and report IR metrics (ir-measures), "
             "or estimate the spec's policy's value on a logged pipeline (--log: IPS, SNIPS, DR).")
    sp.add_argument("--queries", type=Path, help="TSV or JSONL(.gz) queries")
    sp.add_argument("--qrels", type=Path, help="TREC or BEIR TSV(.gz) qrels")
    sp.add_argument("--log", type=Path, help="off-policy evaluation: a state dir (decisions/ "
                    "and events/) logged by some policy; estimates the spec's policy's value")
    sp.add_argument("--measures", nargs="+", default=None,
                    help="ir-measures names (default: nDCG@10 R@100 R@1000 RR@10)")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sp.add_argument("--run", type=Path, help="also write the run in TREC format here")
    sp.add_argument("--by", metavar="FIELD",
                    help="also report the measures per value of this JSONL query field "
                         "(e.g. --by type)")
    sp.add_argument("--per-arm", action="store_true",
                    help="also score each arm's own candidates (what the pipeline took from "
                         "it, in its rank order), e.g. with --measures R@10 R@100")
    sp.add_argument("--batch-size", type=int, default=256)
    _loss_options(sp)

    sp = cmd("serve", _serve, "Serve the pipeline over HTTP: POST /search and /feedback, "
             "GET /health and /metrics, POST /admin/reload (docs/serve.md).")
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 = any free)")
    sp.add_argument("--max-batch", type=int, default=32, metavar="N",
                    help="most concurrent queries answered by one pipeline batch (default: 32)")
    sp.add_argument("--max-wait-ms", type=float, default=1.0, metavar="MS",
                    help="most time a batch waits for queries already arriving (default: 1)")
    sp.add_argument("--max-query-chars", type=int, default=1000, metavar="N",
                    help="longer queries are refused with 422 (default: 1000)")
    sp.add_argument("--max-search-bytes", type=int, default=64 * 1024, metavar="BYTES",
                    help="request body limit of /search (default: 65536)")
    sp.add_argument("--max-feedback-bytes", type=int, default=8 * 1024 * 1024, metavar="BYTES",
                    help="request body limit of /feedback (default: 8388608)")
    sp.add_argument("--max-events", type=int, default=10_000, metavar="N",
                    help="most events per /feedback request (default: 10000)")
    sp.add_argument("--learn-interval-ms", type=float, default=200.0, metavar="MS",
                    help="the background learner gathers events this long before learning "
                         "(default: 200)")
    sp.add_argument("--log-level", default="warning",
                    choices=["critical", "error", "warning", "info", "debug"],
                    help="uvicorn's log level (default: warning)")
    sp.add_argument("--access-log", action="store_true", help="log every request (uvicorn)")
    sp.add_argument("--workers", type=int, default=1, metavar="N",
                    help="processes serving the port, each with its own pipeline; worker 0 "
                         "learns and the others reload what it learned (default: 1; one per "
                         "core uses the machine: one process is bound to a core by the GIL)")
    sp.add_argument("--max-connections", type=int, default=1000, metavar="N",
                    help="open connections per worker; beyond, the longest-idle one is closed, "
                         "or the request is refused with 503 (default: 1000)")
    sp.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                    help="a request's headers must arrive within S seconds of its first byte "
                         "(or of the connection), else 408 and close (default: 10)")
    sp.add_argument("--body-timeout", type=float, default=60.0, metavar="S",
                    help="a request's body must arrive within S seconds of its headers, else "
                         "408 and close (default: 60)")
    sp.add_argument("--keepalive-timeout", type=float, default=15.0, metavar="S",
                    help="an idle kept-alive connection is closed after S seconds (default: 15)")
    sp.add_argument("--max-header-bytes", type=int, default=32 * 1024, metavar="BYTES",
                    help="request line and headers; larger is refused with 431 (default: 32768)")
    sp.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                    help="a Host name clients use (repeatable; *.example.com, * for any); "
                         "default: the loopback names when bound to loopback, else any")
    sp.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                    help="a web origin allowed to call the server, with CORS headers "
                         "(repeatable), e.g. http://localhost:3000; other origins get 403")
    sp.add_argument("--admin-token-file", type=Path, metavar="PATH",
                    help="file holding the token /admin/* requires (Authorization: Bearer); "
                         "default: $LTRR_ADMIN_TOKEN; without one, /admin/* answers only on "
                         "a loopback address")

    sp = cmd("simulate", _simulate, "Simulate users searching: rounds of serve, engage (click "
             "model), learn, per policy; report recall, regret and plots.")
    sp.add_argument("--user-model", default="lastfm",
                    help="registered user model (default: lastfm)")
    sp.add_argument("--with", dest="with_", action="append", metavar="KEY=VALUE",
                    help="user-model option, value in YAML (repeatable), e.g. --with eta=0.5")
    sp.add_argument("--sessions", type=int, default=2000, help="sessions per policy")
    sp.add_argument("--policies", help="comma-separated policy names or policy YAML files "
                    "(default: the spec's policy)")
    sp.add_argument("--rankers", help="comma-separated ranker names or ranker YAML files "
                    "(default: the spec's ranker); every policy runs with every ranker")
    sp.add_argument("--seed", type=int, default=0, help="seeds sessions and engagement")
    sp.add_argument("--round-size", type=int, default=200,
                    help="sessions served before each learning step")
    sp.add_argument("--step", type=int, help="grid step of the comparator allocations "
                    "(default: budget/10 or the nearest divisor)")
    sp.add_argument("--max-arms", type=int, help="most arms per comparator allocation")
    sp.add_argument("--out", "-o", type=Path, help="output folder (default: "
                    "<state_dir>/simulations/<user-model>-n<sessions>-s<seed>)")
    sp.add_argument("--keep-state", action="store_true",
                    help="keep each policy's decision/event logs and learned state under "
                         "OUT/state/<policy>")
    sp.add_argument("--json", action="store_true", help="print the JSON summary")
    sp.add_argument("--strict", action="store_true",
                    help="exit 1 when an answer lost an arm (it failed: simulations wait for "
                         "every arm); each policy's losses are named on stderr either way")
    return p


def _loss_options(sp: argparse.ArgumentParser) -> None:
    """``--deadlines`` and ``--strict`` of the commands that answer queries offline."""
    sp.add_argument("--deadlines", action="store_true",
                    help="drop an arm that misses its deadline_ms, as `ltrr serve` does "
                         "(default: wait for every arm: a batch job wants the answer)")
    sp.add_argument("--strict", action="store_true",
                    help="exit 1 when a query lost an arm (deadline or failure) or a "
                         "slotter's slots; each loss is named on stderr either way")


# --- commands ---------------------------------------------------------------------------

def _validate(args) -> int:
    from ltrr.compiler import load_plan

    plan = load_plan(args.spec)
    m = plan.model
    print(f"ok: {args.spec}: pipeline '{m.name}' — {len(plan.slotters)} slotter(s), "
          f"{len(plan.arms)} arm(s) [{', '.join(a.id for a in plan.arms)}], "
          f"policy {m.policy.use} (budget {m.policy.budget}), merge {m.merge.use}, "
          f"ranker {m.ranker.use}")
    return 0


def _schema(args) -> int:
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


def _plugins(args) -> int:
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


def _graph(args) -> int:
    from ltrr.compiler import load_plan
    from ltrr.runtime.graphviz import draw_png, mermaid

    plan = load_plan(args.spec)
    print(mermaid(plan))
    if args.png:
        draw_png(plan, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def _index(args) -> int:
    from ltrr.cli import output
    from ltrr.compiler import load_plan
    from ltrr.runtime.batch import index_plan

    plan = load_plan(args.spec)
    with output.index_progress() as progress:
        report = index_plan(plan, force=args.force, progress=progress)
    output.print_index_report(report)
    return 0


def _run(args) -> int:
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


def _feedback(args) -> int:
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


def _train(args) -> int:
    from ltrr.compiler import load_plan
    from ltrr.feedback.train import train

    report = train(load_plan(args.spec), args.log, nodes=args.node,
                   quarantine_invalid=args.quarantine_invalid)
    moved = report.get("quarantined")
    if moved is not None:
        print(f"moved {sum(moved.values())} events with invalid timestamps out of "
              f"{len(moved)} event-log parts to events/quarantine/")
    print(f"replayed {report['log']}")
    from ltrr.cli.output import print_learners

    print_learners(report["learners"], idle="nothing new to learn")
    return 0


def _evaluate(args) -> int:
    from ltrr.compiler import load_plan
    from ltrr.errors import RunError

    plan = load_plan(args.spec)
    if args.log is not None:
        if args.queries or args.qrels:
            raise RunError("--log (off-policy evaluation) and --queries/--qrels (judged "
                           "queries) are two different evaluations", hint="use one of them")
        return _evaluate_log(plan, args)
    if not (args.queries and args.qrels):
        raise RunError("evaluate needs --queries and --qrels, or --log",
                       hint="e.g. ltrr evaluate spec.yaml --queries q.jsonl --qrels qrels.tsv")
    from ltrr.cli import output
    from ltrr.runtime.batch import evaluate_plan

    with output.query_progress(args.batch_size) as progress:
        result, lost = evaluate_plan(
            plan, args.queries, args.qrels, measures=args.measures, by=args.by,
            per_arm=args.per_arm, deadlines=args.deadlines, batch_size=args.batch_size,
            run_path=args.run, progress=progress)
    output.warn_losses(lost)
    if args.json:
        output.print_json({k: v for k, v in result.items() if k != "per_query"})
    else:
        output.print_evaluation(result, plan.model.name)
    output.fail_if_strict(lost.problems, args.strict)
    return 0


def _evaluate_log(plan, args) -> int:
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


def _serve(args) -> int:
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


def _simulate(args) -> int:
    from ltrr.cli import output
    from ltrr.compiler import load_plan
    from ltrr.registry import default_registry
    from ltrr.simulate.engine import SimConfig, simulate
    from ltrr.simulate.options import (default_out, losses, parse_with, policy_choices,
                                       ranker_choices, with_rankers)
    from ltrr.simulate.report import write_report

    plan = load_plan(args.spec)
    registry = default_registry()
    out = Path(args.out) if args.out else default_out(plan, args)
    config = SimConfig(sessions=args.sessions, seed=args.seed, round_size=args.round_size,
                       step=args.step, max_arms=args.max_arms,
                       keep_state=out / "state" if args.keep_state else None)
    choices = with_rankers(policy_choices(plan, args.policies, registry),
                           ranker_choices(plan, args.rankers, registry))
    with output.simulation_progress() as progress:
        result = simulate(plan, args.user_model, parse_with(args.with_), choices, config,
                          registry=registry, progress=progress)
    summary = write_report(result, out)
    lost = losses(result)
    for line, _ in lost:
        print(f"warning: {line}", file=sys.stderr)
    if args.json:
        output.print_json(summary)
    else:
        output.print_simulation(summary, out)
    output.fail_if_strict([problem for _, problem in lost], args.strict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
