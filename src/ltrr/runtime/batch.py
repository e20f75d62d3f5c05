"""Offline batch work behind ``ltrr index``, ``ltrr run`` and ``ltrr evaluate``.

Everything here returns data; the CLI (``ltrr.cli``) shows it. Progress goes through
optional callbacks.

Offline work opens the pipeline without deadlines unless asked (``deadlines=True``): a
batch job wants every arm's answer, not a latency budget, and a loaded machine or a cold
JVM must not change its results. An arm can still fail: :func:`losses` names every
query that lost one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltrr.compiler import Plan
from ltrr.components import Indexed
from ltrr.errors import RunError
from ltrr.executors import Executor, LocalExecutor, shards
from ltrr.runtime.indexing import build_state
from ltrr.runtime.pipeline import Pipeline
from ltrr.runtime.queries import read_queries
from ltrr.runtime.request_ids import check_unused
from ltrr.runtime.workspace import Workspace
from ltrr.types import Decision, Query

#: ``(node id, component name, done, total)``; total None while unknown.
IndexProgress = Callable[[str, str, int, "int | None"], None]
#: ``(queries answered, queries in all)``.
Progress = Callable[[int, int], None]


def index_plan(plan: Plan, *, force: bool = False,
               progress: IndexProgress | None = None,
               executor: Executor | None = None) -> dict[str, Any]:
    """Build every indexed node's state, skipping those already current, then the
    catalog's id map (:mod:`ltrr.catalog_map`). Returns node id → build stats (None:
    already up to date); empty when no node keeps an index.

    ``executor`` builds the nodes in parallel, one per task: a node's state depends on
    the catalog and its own params alone, never on another node's (an arm reaches its
    encoder, which keeps no index). Progress is then per node, not per document."""
    import functools

    if executor is not None and executor.kind != "local":
        nodes = [n for n in plan.nodes if issubclass(n.registration.cls, Indexed)]
        for node in nodes:
            if progress:
                progress(node.id, node.registration.name, 0, None)

        def built(i: int, stats) -> None:
            if progress:
                progress(nodes[i].id, nodes[i].registration.name, 1, 1)

        results = executor.map(functools.partial(_build_node, plan, force),
                               [n.id for n in nodes], on_done=built,
                               names=[f"index node '{n.id}'" for n in nodes])
        report = dict(zip([n.id for n in nodes], results))
        _map_catalog(plan, report, force)
        return report
    workspace = Workspace(plan)
    report: dict[str, Any] = {}
    try:
        nodes = [(n, workspace.instantiate(n)) for n in plan.nodes]
        for node, comp in nodes:
            if not isinstance(comp, Indexed):
                continue

            def update(done: int, total: int, node=node) -> None:
                if progress:
                    progress(node.id, node.registration.name, done, total)

            update(0, None)
            report[node.id] = stats = build_state(comp, update, force=force)
            if stats is None:
                update(1, 1)
        _map_catalog(plan, report, force, workspace)
    finally:
        workspace.close()
    return report


def _map_catalog(plan: Plan, report: dict[str, Any], force: bool,
                 workspace: Workspace | None = None) -> None:
    """Map the catalog's ids and titles for later opens (after any index was built)."""
    catalog = (workspace or Workspace(plan)).catalog
    if report and (force or catalog.map is None):
        catalog.write_map()


def _build_node(plan: Plan, force: bool, node_id: str) -> dict[str, Any] | None:
    """One indexed node's state built in a worker (its own workspace)."""
    workspace = Workspace(plan)
    try:
        return build_state(workspace.instantiate(plan.node(node_id)), lambda d, t: None,
                           force=force)
    finally:
        workspace.close()


def answer(pipeline: Pipeline, queries: list[Query], batch_size: int = 256,
           progress: Progress | None = None) -> list[Decision]:
    """Run ``queries`` in batches of ``batch_size``."""
    size = max(1, batch_size)
    decisions: list[Decision] = []
    for i in range(0, len(queries), size):
        decisions.extend(pipeline.run_batch(queries[i:i + size]))
        if progress:
            progress(len(decisions), len(queries))
    return decisions


def run_queries(plan: Plan, queries: list[Query], *, log: bool | None = None,
                deadlines: bool = False, batch_size: int = 256, source: Path | None = None,
                with_titles: bool = False, progress: Progress | None = None
                ) -> tuple[list[Decision], dict[str, str]]:
    """Answer ``queries``; ``log`` None follows the spec. ``source`` (the query file)
    makes a request id the decision log already holds an error naming it. Returns the
    decisions and, with ``with_titles``, entity id → the catalog's title column."""
    with Pipeline(plan, log_decisions=log, deadlines=deadlines) as pipeline:
        if source is not None and pipeline.log is not None:   # a request id names one decision
            check_unused(pipeline.log, [q.request_id for q in queries], source)
        decisions = answer(pipeline, queries, batch_size, progress)
        return decisions, (_titles(pipeline, decisions) if with_titles else {})


def _open_pipeline(plan: Plan, deadlines: bool) -> Pipeline:
    return Pipeline(plan, log_decisions=False, deadlines=deadlines)


def _run_batch(pipeline: Pipeline, queries: list[Query]) -> list[Decision]:
    return pipeline.run_batch(queries)


def answer_batches(plan: Plan, queries: list[Query], *, deadlines: bool = False,
                   batch_size: int = 256, progress: Progress | None = None,
                   executor: Executor | None = None) -> list[Decision]:
    """Answer ``queries`` unlogged on ``executor`` (default: here): cut into
    ``ceil(n / batch_size)`` batches of equal size (±1) — a split that depends on
    nothing but ``n`` and ``batch_size``, so every query is answered in the same batch
    whichever executor runs it (an encoder's padding can depend on its batch) — each
    worker opening the pipeline once; decisions in query order."""
    import functools
    import math

    n = len(queries)
    cuts = shards(n, math.ceil(n / max(1, batch_size)))
    batches = [queries[r.start:r.stop] for r in cuts]
    done = [0]

    def answered(i: int, decisions: list[Decision]) -> None:
        done[0] += len(decisions)
        if progress:
            progress(done[0], n)

    executor = executor or LocalExecutor()
    results = executor.map(_run_batch, batches, init=functools.partial(
        _open_pipeline, plan, deadlines), on_done=answered,
        names=[f"queries {r.start + 1}-{r.stop}" for r in cuts])
    return [d for batch in results for d in batch]


def _titles(pipeline: Pipeline, decisions: list[Decision]) -> dict[str, str]:
    column = pipeline.plan.model.catalog.title
    if not column:
        return {}
    catalog = pipeline.catalog
    titles = {e: catalog.title_of(e) for e in {r.entity_id for d in decisions for r in d.ranking}}
    return {e: t for e, t in titles.items() if t is not None}


@dataclass
class Losses:
    """What answers lost: ``notes`` (request id, query text, note) per loss, ``arms``
    (arm id → queries that lost it), one summary per kind of loss in ``problems``."""

    notes: list[tuple[str, str, str]] = field(default_factory=list)
    arms: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def losses(decisions: list[Decision]) -> Losses:
    """Every query that lost an arm (deadline or failure) or a slotter's slots."""
    out = Losses()
    lost_arm = lost_slots = 0
    for d in decisions:
        out.notes.extend((d.request_id, d.query.text, note) for note in d.trace)
        for arm in d.dropped:
            out.arms[arm] = out.arms.get(arm, 0) + 1
        lost_arm += bool(d.dropped)
        lost_slots += any(note.startswith("slotter '") for note in d.trace)
    total = len(decisions)
    if lost_arm:
        out.problems.append(f"{lost_arm} of {total} queries lost an arm ("
                            + ", ".join(f"{a}: {n}" for a, n in sorted(out.arms.items()))
                            + ")")
    if lost_slots:
        out.problems.append(f"{lost_slots} of {total} queries lost a slotter's slots")
    return out


def decision_json(d: Decision, k: int) -> dict[str, Any]:
    """One decision as ``ltrr run --format jsonl`` writes it."""
    return {
        "request_id": d.request_id, "query": d.query.text,
        "slots": [{"slot": s.name, "value": s.value, "score": round(s.score, 4)}
                  for s in d.slots],
        "allocation": d.action.allocation, "probability": d.action.probability,
        "results": [{"rank": r.rank, "id": r.entity_id,
                     **({"type": r.entity_type} if r.entity_type is not None else {}),
                     "score": r.score, "arms": {c.arm: c.rank for c in r.sources}}
                    for r in d.ranking[:k]],
        "timings_ms": {key: round(v, 3) for key, v in d.timings_ms.items()},
        "trace": d.trace,
        "dropped": d.dropped,
    }


def trec_lines(decisions: list[Decision], tag: str, k: int | None = None) -> list[str]:
    """The rankings in TREC run format (``qid Q0 docid rank score tag``)."""
    return [f"{d.request_id} Q0 {r.entity_id} {r.rank} {r.score:.6f} {tag}\n"
            for d in decisions for r in d.ranking[:k]]


#: ``--by entity_type`` on a typed catalog: queries grouped by what they look for
ENTITY_TYPE = "entity_type"


def groups_by_entity_type(qrels: dict[str, dict[str, int]], qids: list[str],
                          type_of: dict[str, str]) -> dict[str, str]:
    """Query id → the entity type(s) of its relevant judged entities (``a+b`` when they
    are of several types; ``(none)`` for entities not in the catalog)."""
    out = {}
    for q in qids:
        kinds = sorted({type_of.get(e, "(none)") for e, rel in qrels.get(q, {}).items()
                        if rel > 0})
        out[q] = "+".join(kinds) or "(none)"
    return out


def evaluate_plan(plan: Plan, queries_path: Path, qrels_path: Path, *,
                  measures: list[str] | None = None, by: str | None = None,
                  per_arm: bool = False, deadlines: bool = False, batch_size: int = 256,
                  run_path: Path | None = None, progress: Progress | None = None,
                  executor: Executor | None = None) -> tuple[dict[str, Any], Losses]:
    """Answer the judged queries and score the ranking with ir-measures; returns the
    result and what the answers lost. ``executor`` shares the batches among workers
    (see :func:`answer_batches`): the measures are the same on every executor.

    ``by`` also scores each group of queries sharing a value of that JSONL field;
    ``per_arm`` also scores each arm's own candidate list (``Decision.candidates``).
    """
    from ltrr.evaluation import (DEFAULT_MEASURES, arm_runs, evaluate_breakdown, evaluate_run,
                                 groups_by, parse_measures, read_qrels, read_query_fields,
                                 run_of)

    qrels = read_qrels(qrels_path)
    measures = measures or list(DEFAULT_MEASURES)
    parse_measures(measures)    # fail on a bad measure name before running anything
    queries = [q for q in read_queries(queries_path) if q.request_id in qrels]
    if not queries:
        raise RunError("no query id in the query file has judgements in the qrels",
                       hint="check that both files use the same query ids")
    groups = None
    qids = [q.request_id for q in queries]
    if by == ENTITY_TYPE and plan.model.catalog.types is not None:
        from ltrr.runtime.workspace import Workspace

        groups = groups_by_entity_type(qrels, qids, Workspace(plan).catalog.type_of)
    elif by:                    # fail on a bad --by before running anything
        groups = groups_by(read_query_fields(queries_path), qids, by, queries_path)
    decisions = answer_batches(plan, queries, deadlines=deadlines, batch_size=batch_size,
                               progress=progress, executor=executor)
    lost = losses(decisions)
    if run_path:
        with open(run_path, "w", encoding="utf-8") as f:
            f.writelines(trec_lines(decisions, plan.model.name))
    run = run_of(decisions)
    result = evaluate_run(run, qrels, measures)
    totals = [d.timings_ms["total"] for d in decisions]
    result["median_ms_per_query"] = sorted(totals)[len(totals) // 2]
    result["pipeline"] = plan.model.name
    result["spec_hash"] = plan.spec.hash
    result["dropped_arms"] = lost.arms     # arm id → queries scored without it
    if by or per_arm:
        arms = arm_runs(decisions, [a.id for a in plan.arms]) if per_arm else None
        result.update(evaluate_breakdown(run, qrels, measures, groups=groups, arms=arms))
        if by:
            result["by"] = by
    return result, lost
