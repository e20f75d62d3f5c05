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
from ltrr.cli import commands
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

    sp = cmd("init", commands.init, "Write a commented, working spec from a catalog's columns.",
             spec=False)
    sp.add_argument("catalog", type=Path,
                    help="the entities: a Parquet, CSV, TSV or JSONL file (text ones may be .gz)")
    sp.add_argument("--interactions", type=Path, help=(
        "a file of who engaged with what (user, entity, optional value): co-occurrence "
        "relations for the graph arm"))
    sp.add_argument("--out", type=Path, help="the spec to write (default: <catalog>.yaml "
                                             "beside the catalog)")
    sp.add_argument("--id", dest="id_column", help="the id column (default: guessed)")
    sp.add_argument("--name", help="the pipeline's name (default: from the file name)")
    sp.add_argument("--force", action="store_true", help="overwrite an existing --out")

    cmd("validate", commands.validate,
        "Check a spec and the columns of its data files (exit 0 or 1).")

    sp = cmd("schema", commands.schema, "Print the JSON Schema of pipeline specs (for editors).",
             spec=False)
    sp.add_argument("--components", action="store_true",
                    help="also print the params schema of every registered component")

    cmd("plugins", commands.plugins,
        "List registered components and the packages providing them.", spec=False)

    sp = cmd("graph", commands.graph,
             "Print the compiled plan as a Mermaid flowchart; optionally a PNG.")
    sp.add_argument("--png", type=Path, help="also draw the plan into this PNG file")

    sp = cmd("index", commands.index, "Build the state (indexes) of every arm that needs one.")
    sp.add_argument("--force", action="store_true", help="rebuild even if up to date")
    _executor_options(sp, "the indexed nodes are built in parallel, one per worker")

    sp = cmd("run", commands.run,
             "Answer queries with the pipeline and print the ranked results.")
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

    sp = cmd("feedback", commands.feedback,
             "Ingest feedback events (JSONL or Parquet) and learn from "
             "them; replaying a file adds nothing twice.")
    sp.add_argument("events", type=Path, help="events file")

    sp = cmd("train", commands.train, "Replay a decision + event log into the pipeline's learners "
             "(offline learning); replaying the same log twice adds nothing.")
    sp.add_argument("--log", type=Path, metavar="DIR",
                    help="state folder holding decisions/ and events/ (default: the "
                         "pipeline's own)")
    sp.add_argument("--node", action="append", metavar="ID",
                    help="train only this learner (repeatable; default: all learners)")
    sp.add_argument("--quarantine-invalid", action="store_true",
                    help="first move logged events with invalid timestamps (NaN, infinite, "
                         "before 1970, beyond feedback.max_future_s) to events/quarantine/")
    _executor_options(sp, "another folder's log (--log) is read and joined day by day in "
                          "parallel; the learners learn the days in order")

    sp = cmd("evaluate", commands.evaluate,
             "Run judged queries and report IR metrics (ir-measures), "
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
                         "(e.g. --by type); on a catalog with entity types, --by entity_type "
                         "groups the queries by the type of their relevant entities")
    sp.add_argument("--per-arm", action="store_true",
                    help="also score each arm's own candidates (what the pipeline took from "
                         "it, in its rank order), e.g. with --measures R@10 R@100")
    sp.add_argument("--batch-size", type=int, default=256, help=(
        "queries per pipeline batch (default: 256); the queries are cut into "
        "ceil(queries / batch-size) batches of equal size, whichever the executor"))
    _loss_options(sp)
    _executor_options(sp, "the batches are shared among workers that each open the "
                          "pipeline once")

    sp = cmd("serve", commands.serve, "Serve the pipeline over HTTP: POST /search and /feedback, "
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

    sp = cmd("simulate", commands.simulate,
             "Simulate users searching: rounds of serve, engage (click "
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
    sp.add_argument("--seeds", metavar="S1,S2,...|N", help=(
        "a sweep over several seeds: a list, or N seeds from --seed on; each seed's report "
        "goes to OUT/seed-<s>/, OUT/summary.json holds the means across seeds with paired "
        "standard errors"))
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
    _executor_options(sp, "every (policy, ranker, seed) run is a task of its own")
    return p


def _executor_options(sp: argparse.ArgumentParser, what: str) -> None:
    """``--executor`` and ``--workers`` of the commands that can spread their work."""
    sp.add_argument("--executor", default="local", metavar="local|processes|ray[=ADDRESS]",
                    help=f"where the work runs: this process (default), spawned processes on "
                         f"this machine, or Ray (a local one, or the cluster at ADDRESS; "
                         f"pip install 'ltrr[ray]'): {what}; results are the same on each")
    sp.add_argument("--workers", type=int, metavar="N",
                    help="workers of --executor processes or ray (default: one per core; "
                         "Ray: the cluster's CPUs)")


def _loss_options(sp: argparse.ArgumentParser) -> None:
    """``--deadlines`` and ``--strict`` of the commands that answer queries offline."""
    sp.add_argument("--deadlines", action="store_true",
                    help="drop an arm that misses its deadline_ms, as `ltrr serve` does "
                         "(default: wait for every arm: a batch job wants the answer)")
    sp.add_argument("--strict", action="store_true",
                    help="exit 1 when a query lost an arm (deadline or failure) or a "
                         "slotter's slots; each loss is named on stderr either way")


if __name__ == "__main__":
    sys.exit(main())
