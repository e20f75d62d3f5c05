"""Execute a compiled plan for a batch of queries.

Opening: instantiate → ``open()`` → ``warm()`` every component, so no first-call cost
(JVM class loading, a first search) lands inside a deadline. The path of a batch:
slotters → policy → arms (wave by wave; arms of a wave run concurrently, each under its
deadline unless deadlines are off, failures isolated) → merge → rank → Decision records
(logged, and passed to the ``ltrr_decision_made`` hook).
"""

from __future__ import annotations

import gc
import os
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import cached_property, partial
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable

from ltrr.catalog import Catalog
from ltrr.compiler import Plan
from ltrr.components import Component, Indexed
from ltrr.errors import LtrrError, RunError, StateError
from ltrr.registry import Registry, default_registry
from ltrr.runtime.cache import (LruCache, arm_key, cached_call, candidate_cache, query_key,
                                slot_cache)
from ltrr.runtime.decision_log import DecisionLog
from ltrr.runtime.indexing import check_state
from ltrr.runtime.workspace import Workspace

if TYPE_CHECKING:
    import polars as pl

    from ltrr.runtime.entity_types import Typing
from ltrr.types import ArmRequest, Candidate, Decision, PolicyContext, Query, RankRequest, Slot

TRACE = bool(os.environ.get("LTRR_TRACE"))


def new_request_id() -> str:
    return uuid.uuid4().hex


class Pipeline:
    """A plan with its components instantiated and opened, ready to answer queries.

    Use as a context manager, or call :meth:`close`. ``deadlines=False`` waits for every
    arm however long it takes (offline commands: a batch job wants the answer, not a
    latency budget); an arm that fails is still dropped, and named in
    ``Decision.dropped``.
    """

    def __init__(self, plan: Plan, *, registry: Registry | None = None,
                 log_decisions: bool | None = None, check: bool = True,
                 deadlines: bool = True, own_gc: bool = True):
        self.plan = plan
        self.own_gc = own_gc
        self.deadlines = deadlines
        self.registry = registry or default_registry()
        spec = plan.spec
        self.workspace = Workspace(plan)
        self.components: dict[str, Component] = {
            node.id: self.workspace.instantiate(node) for node in plan.nodes}
        self.waves = _waves(plan)
        #: node id → LRU cache of its results, for the slotters and arms with ``cache:``
        self.caches: dict[str, LruCache] = {
            **{n.id: slot_cache(n.spec.cache) for n in plan.slotters if n.spec.cache},
            **{n.id: candidate_cache(n.spec.cache) for n in plan.arms if n.spec.cache}}
        self.downstream = {a.id: [d.id for d in plan.arms if a.id in plan.upstream(d.id)]
                           for a in plan.arms}
        self._executor = ThreadPoolExecutor(max_workers=2 * len(plan.arms) + 2,
                                            thread_name_prefix="ltrr-arm")
        enabled = plan.model.log.decisions if log_decisions is None else log_decisions
        self.log = DecisionLog(spec.decisions_dir) if enabled else None
        if check:
            for comp in self.components.values():
                check_state(comp, spec.path)
        #: node id → seconds its ``open`` and ``warm`` took (the catalog is read by the
        #: first node that needs it, and counted there)
        self.open_seconds: dict[str, dict[str, float]] = {}
        for node_id, comp in self.components.items():   # encoders first: arms use them
            t = perf_counter()
            _open(comp, spec.path)
            self.open_seconds[node_id] = {"open": perf_counter() - t}
            self.workspace.adopt(node_id, comp)
        for node_id, comp in self.components.items():
            t = perf_counter()
            _warm(comp)
            self.open_seconds[node_id]["warm"] = perf_counter() - t
        # indexes and models loaded above live as long as the pipeline: keep them out of
        # the cyclic GC's scans, which otherwise cost large batches 2-4x. A process that
        # holds several pipelines (a server) passes own_gc=False and decides itself.
        if own_gc:
            gc.freeze()

    @property
    def catalog(self) -> Catalog:
        return self.workspace.catalog

    def reopen(self, node_ids: list[str]) -> None:
        """Open these nodes afresh from their state on disk (what another process
        learned) and swap them in; a batch in flight finishes with the old objects,
        which are left to the garbage collector rather than closed under it."""
        fresh = {}
        for node_id in node_ids:
            comp = self.workspace.instantiate(self.plan.node(node_id))
            _open(comp, self.plan.spec.path)
            _warm(comp)
            fresh[node_id] = comp
        for node_id, comp in fresh.items():
            self.components[node_id] = comp
            self.workspace.adopt(node_id, comp)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.workspace.close()
        if self.own_gc:
            gc.unfreeze()      # let what this pipeline loaded be collected again

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @cached_property
    def _typing(self) -> "Typing | None":
        """Entity types of candidates and results (None: an untyped catalog)."""
        if not self.plan.view.types:
            return None
        from ltrr.runtime.entity_types import Typing

        return Typing(self.catalog.type_of, self.plan.view.arm_types,
                      self.plan.model.output.quotas)

    @cached_property
    def _arm_specs(self):
        return {a.id: a for a in self.plan.model.arms}

    # --- learning -----------------------------------------------------------------------

    def feedback(self, events: "list[dict] | pl.DataFrame", *, now: float | None = None
                 ) -> dict[str, Any]:
        """Log feedback ``events`` and have this open pipeline's learners learn them in
        place, so the next query already sees what they learned — online learning for an
        application that embeds ltrr.

        ``events`` are dicts of the :class:`ltrr.feedback.schema.Event` fields (validated;
        a bad one raises a RunError naming ``events[i]`` and the field) or a frame of the
        event log's schema. ``now``: when attribution windows close (default: the clock).
        Returns the report of :func:`ltrr.feedback.ingest.ingest`. Another process's
        ``ltrr feedback`` on the same state would learn into files this pipeline does
        not reread; call :meth:`reopen` for the nodes it learned.
        """
        import polars as pl

        from ltrr.errors import Location
        from ltrr.feedback.events import events_from_rows
        from ltrr.feedback.ingest import ingest

        fb = self.plan.model.feedback
        if not isinstance(events, pl.DataFrame):
            events = events_from_rows(list(events), lambda i: Location(f"events[{i}]"),
                                      fb.weights, max_future_s=fb.max_future_s)
        return ingest(self.plan, events, workspace=self.workspace, now=now)

    # --- execution ----------------------------------------------------------------------

    def run(self, query: Query) -> Decision:
        return self.run_batch([query])[0]

    def run_batch(self, queries: list[Query]) -> list[Decision]:
        """Answer a batch of queries; every arm gets the whole batch in one call."""
        n = len(queries)
        if n == 0:
            return []
        started = perf_counter()
        timings: dict[str, float] = {}
        traces: list[list[str]] = [[] for _ in range(n)]
        dropped: list[dict[str, str]] = [{} for _ in range(n)]

        slots, by_slotter = self._slot(queries, timings, traces)
        if self._typing is not None:
            self._typing.slots(slots)
        contexts = [PolicyContext(q, s) for q, s in zip(queries, slots)]
        policy = self.components["policy"]
        if getattr(policy, "wants_evidence", False):
            t = perf_counter()
            self._evidence(contexts, traces)
            timings["evidence"] = _ms(t)
        t = perf_counter()
        actions = policy.choose_batch(contexts)
        timings["policy"] = _ms(t)

        results, arms_ms = self._retrieve(queries, slots, by_slotter, actions, timings, traces,
                                          dropped)

        merger, ranker = self.components["merge"], self.components["ranker"]
        k_out, budget = self.plan.model.output.k, self.plan.model.policy.budget
        per_query_arms: list[dict[str, list[Candidate]]] = []
        merged_all = []
        typing = self._typing
        t = perf_counter()
        for i in range(n):
            per_arm = {arm: results[arm][i][:k] for arm, k in actions[i].allocation.items()
                       if results.get(arm) and results[arm][i] is not None}
            if typing is not None:
                per_arm = typing.candidates(per_arm)
            per_query_arms.append(per_arm)
            merged_all.append(merger.merge(per_arm, budget))
        timings["merge"] = _ms(t)
        t = perf_counter()
        k_rank = k_out if typing is None or not typing.quotas else budget
        rankings = ranker.rank_batch([RankRequest(q, slots[i], merged_all[i], k_rank)
                                      for i, q in enumerate(queries)])
        if typing is not None:
            rankings = [typing.ranking(r, k_out) for r in rankings]
        timings["ranker"] = _ms(t)

        per_query: dict[str, float] = {}
        now = time.time()
        spec_hash = self.plan.spec.hash
        decisions = [Decision(request_id=q.request_id, query=q, spec_hash=spec_hash,
                              slots=slots[i], action=actions[i], candidates=per_query_arms[i],
                              ranking=rankings[i], timings_ms=per_query, trace=traces[i],
                              timestamp=now, dropped=dropped[i])
                     for i, q in enumerate(queries)]
        # total covers the framework's own work; observer hooks and the log write follow
        total = _ms(started)
        arm_ids = set(results)
        inside = arms_ms + sum(v for key, v in timings.items() if key not in arm_ids)
        timings["total"] = total
        timings["framework"] = max(0.0, total - inside)
        per_query.update({key: v / n for key, v in timings.items()})
        per_query["batch_size"] = n
        if TRACE:
            sys.stderr.write("[ltrr trace] node timings (ms, batch of %d): %s\n" % (
                n, " ".join(f"{key}={v:.3f}" for key, v in timings.items())))
        hook = self.registry.pm.hook.ltrr_decision_made
        for d in decisions:
            hook(decision=d)
        if self.log is not None:
            self.log.append(decisions)
        return decisions

    def _evidence(self, contexts: list[PolicyContext], traces) -> None:
        """Each evidence-giving arm's signals into the contexts; an arm that fails gives
        none this time (noted in the trace), never failing the query."""
        wanted = getattr(self.components["policy"], "evidence_arms", None)
        for arm_id in self._evidence_arms:
            if wanted is not None and arm_id not in wanted:
                continue
            try:
                found = self.components[arm_id].evidence_batch(contexts)
                if found is None or len(found) != len(contexts):
                    raise RunError(f"returned {'None' if found is None else len(found)} "
                                   f"evidence rows for {len(contexts)} queries")
            except Exception as exc:
                for tr in traces:
                    tr.append(f"arm '{arm_id}' gave no evidence: {type(exc).__name__}: "
                              f"{exc}")
                continue
            for c, ev in zip(contexts, found):
                if ev:
                    c.evidence[arm_id] = ev

    @cached_property
    def _evidence_arms(self) -> list[str]:
        """Arms whose class gives evidence (overrides ``Arm.evidence_batch``)."""
        from ltrr.components import Arm

        return [a.id for a in self.plan.arms
                if type(self.components[a.id]).evidence_batch is not Arm.evidence_batch]

    def _slot(self, queries, timings, traces):
        n = len(queries)
        slots: list[list[Slot]] = [[] for _ in range(n)]
        by_slotter: dict[str, list[list[Slot]]] = {}
        for node in self.plan.slotters:
            t = perf_counter()
            try:
                comp = self.components[node.id]
                out = cached_call(comp.slot_batch, self.caches.get(node.id),
                              partial(query_key, personal=comp.reads_user), queries)
            except Exception as exc:  # isolate: the query still answers without these slots
                for tr in traces:
                    tr.append(f"slotter '{node.id}' failed: {type(exc).__name__}: {exc}")
                out = [[] for _ in range(n)]
            timings[node.id] = _ms(t)
            by_slotter[node.id] = out
            for i, s in enumerate(out):
                slots[i].extend(s)
        return slots, by_slotter

    def _retrieve(self, queries, slots, by_slotter, actions, timings, traces, dropped):
        """Run the arms wave by wave, each under its deadline (unless deadlines are off).

        Returns arm id → per-query candidate lists (None where the arm was not run or
        was dropped), and the time spent inside arms: per wave, the arms' summed time,
        capped at the wave's wall time (arms that overlap count once; arms that queue for
        the cores or the GIL count fully — that wait is theirs, not the framework's).
        """
        n = len(queries)
        results: dict[str, list[list[Candidate] | None]] = {}
        arms_ms = 0.0
        needs = [self._needs(a.allocation) for a in actions]
        for wave in self.waves:
            wave_started = perf_counter()
            pending: list[tuple[str, list[int], Future, float]] = []
            inline: list[tuple[Future, Callable, list[ArmRequest], float]] = []
            for arm in wave:
                spec = self._arm_specs[arm]
                need = [needs[i][arm] for i in range(n)]
                idx = [i for i in range(n) if need[i] > 0]
                if not idx:
                    continue
                requests = [ArmRequest(queries[i], min(need[i], spec.max_k), slots[i],
                                       self._seeds(arm, i, results, by_slotter)) for i in idx]
                comp = self.components[arm]
                call = comp.retrieve_batch
                if arm in self.caches:
                    call = partial(cached_call, call, self.caches[arm],
                                   partial(arm_key, personal=comp.reads_user))
                # measured from the wave's submission, after opening and warming
                budget_s = spec.deadline_ms * len(idx) / 1000.0 if self.deadlines else None
                if comp.threaded:
                    fut = self._executor.submit(_timed, call, requests)
                else:
                    fut = Future()
                    inline.append((fut, call, requests, budget_s))
                pending.append((arm, idx, fut, budget_s))
            t_wave = perf_counter()
            for fut, call, requests, budget_s in inline:   # meanwhile the pool works
                try:
                    lists, elapsed = _timed(call, requests)
                except Exception as exc:
                    fut.set_exception(exc)
                    continue
                if budget_s is not None and elapsed > budget_s * 1000.0:
                    fut.set_exception(FutureTimeout())
                else:
                    fut.set_result((lists, elapsed))
            inside = 0.0
            for arm, idx, fut, budget_s in pending:
                out: list[list[Candidate] | None] = [None] * n
                results[arm] = out
                try:
                    remaining = (None if budget_s is None
                                 else max(0.0, budget_s - (perf_counter() - t_wave)))
                    lists, elapsed = fut.result(timeout=remaining)
                    if len(lists) != len(idx):
                        raise RuntimeError(f"returned {len(lists)} lists for {len(idx)} queries")
                except FutureTimeout:
                    fut.cancel()
                    note = f"arm '{arm}' exceeded its deadline ({budget_s * 1000:.0f} ms); dropped"
                    reason = "deadline"
                    timings[arm] = budget_s * 1000.0
                except Exception as exc:
                    note = f"arm '{arm}' failed: {type(exc).__name__}: {exc}; dropped"
                    reason = "failed"
                    timings[arm] = _ms(t_wave)
                else:
                    timings[arm] = elapsed
                    inside += elapsed
                    for i, cands in zip(idx, lists):
                        out[i] = cands
                    continue
                for i in idx:
                    traces[i].append(note)
                    dropped[i][arm] = reason
                inside += timings[arm]
            # arms start running while later ones are still being submitted: cap by the
            # wall time since the wave's first submission
            arms_ms += min(inside, _ms(wave_started))
        return results, arms_ms

    def _needs(self, allocation: dict[str, int]) -> dict[str, int]:
        """How many candidates each arm must produce for one query: its allocation, or
        more when an arm downstream of it (transitively) runs and takes its seeds."""
        needs: dict[str, int] = {}
        for node in reversed(self.plan.arms):            # downstream arms first
            k = allocation.get(node.id, 0)
            for down in self.downstream[node.id]:
                if needs[down] > 0:
                    k = max(k, self._arm_specs[down].seeds)
            needs[node.id] = k
        return needs

    def _seeds(self, arm: str, i: int, results, by_slotter) -> list[Candidate]:
        spec = self._arm_specs[arm]
        seeds: list[Candidate] = []
        for up in spec.from_:
            if up in by_slotter:
                found = [s for s in by_slotter[up][i] if s.entity_id][: spec.seeds]
                seeds.extend(Candidate(s.entity_id, up, r + 1, s.score)
                             for r, s in enumerate(found))
            elif results.get(up) and results[up][i]:
                seeds.extend(results[up][i][: spec.seeds])
        return seeds


def _open(comp: Component, spec_path) -> None:
    """Open a component; a failure to load built state becomes a StateError with the fix."""
    try:
        comp.open()
    except LtrrError:
        raise
    except Exception as exc:
        if not isinstance(comp, Indexed):
            raise
        raise StateError(f"cannot load its index from {comp.ctx.state_dir} "
                         f"({type(exc).__name__}: {exc}); it may be corrupt",
                         node=comp.ctx.node_id,
                         hint=f"rebuild it with `ltrr index {spec_path} --force`") from exc


def _warm(comp: Component) -> None:
    """Warm an opened component; a failure names the node (it would fail queries too)."""
    try:
        comp.warm()
    except LtrrError:
        raise
    except Exception as exc:
        raise RunError(f"warming up failed ({type(exc).__name__}: {exc})",
                       node=comp.ctx.node_id) from exc


def _timed(fn: Callable, arg):
    t = perf_counter()
    out = fn(arg)
    return out, _ms(t)


def _ms(t: float) -> float:
    return (perf_counter() - t) * 1000.0


def _waves(plan: Plan) -> list[list[str]]:
    """Arms grouped so that every arm's upstream arms are in earlier waves."""
    level: dict[str, int] = {}
    for a in plan.arms:   # topological order
        ups = [u for u in plan.upstream(a.id) if u in level]
        level[a.id] = 1 + max((level[u] for u in ups), default=-1)
    waves: list[list[str]] = [[] for _ in range(max(level.values()) + 1)]
    for arm, lv in level.items():
        waves[lv].append(arm)
    return waves
