"""The live pipeline: leases for batches and learning, atomic swaps on reload.

A :class:`Served` is one opened pipeline (one *generation*). Work takes a lease on
the current one; a reload compiles the spec again, opens a new pipeline next to the
old, swaps it in, and closes the old one once its last lease (the batch or learning
run in flight) is returned. A spec that fails to load or open leaves the old one
serving.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ltrr.serve import gc_policy

if TYPE_CHECKING:
    from ltrr.compiler import Plan
    from ltrr.runtime.decision_log import DecisionLog
    from ltrr.runtime.pipeline import Pipeline

log = logging.getLogger("ltrr.serve")


class Served:
    """One opened pipeline with what the endpoints need from its plan."""

    def __init__(self, plan: "Plan", pipeline: "Pipeline", generation: int, seconds: float):
        from ltrr.components import Learner
        from ltrr.feedback.ingest import decision_log

        self.plan = plan
        self.pipeline = pipeline
        self.generation = generation
        self.open_seconds = seconds
        self.k_max = plan.model.output.k
        self.weights = dict(plan.model.feedback.weights)
        self.decision_log: "DecisionLog | None" = (
            decision_log(plan) if plan.model.log.decisions else None)
        self.learners = [n.id for n in plan.nodes if issubclass(n.registration.cls, Learner)]
        self.typed = plan.model.catalog.types is not None
        # titles looked up per result (mapped by `ltrr index`), not a dict of the catalog
        self.catalog = pipeline.catalog if plan.model.catalog.title else None
        self.users = 0
        self.retired = False
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.pipeline.close()


def open_served(spec: Path, generation: int) -> Served:
    """Load, compile and open the spec's pipeline (LtrrError when anything is wrong)."""
    from ltrr.compiler import load_plan
    from ltrr.runtime.pipeline import Pipeline

    started = time.perf_counter()
    plan = load_plan(spec)
    # the server logs decisions itself, and owns the garbage collector (gc_policy)
    pipeline = Pipeline(plan, log_decisions=False, own_gc=False)
    try:
        served = Served(plan, pipeline, generation, 0.0)
        warm_up(served)
    except BaseException:
        pipeline.close()
        raise
    served.open_seconds = time.perf_counter() - started
    return served


def warm_up(served: Served, n: int = 64) -> None:
    """Answer a few queries made of catalog titles (not logged), so the first real
    requests do not pay for the JVM's JIT and cold caches."""
    from ltrr.types import Query

    titles: list[str] = []
    catalog = served.catalog
    if catalog is not None and len(catalog):
        for row in range(0, len(catalog), max(1, len(catalog) // n)):
            if (title := catalog.title_of(catalog.id_at(row))) is not None:
                titles.append(title)
    titles = titles[:n] or ["warm up"]
    for size in (1, 8, len(titles)):
        served.pipeline.run_batch([Query(f"warmup-{i}", t) for i, t in
                                   enumerate(titles[:size])])


class PipelineHolder:
    """The current :class:`Served`, swapped atomically by :meth:`reload`.

    ``learn_lock`` keeps learning and opening apart: a pipeline being opened reads
    the learned state from disk while no learner is writing it.
    """

    def __init__(self, spec: Path, served: Served):
        self.spec = spec
        self.current = served
        self.learn_lock = threading.Lock()
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._closers: list[threading.Thread] = []

    @classmethod
    def open(cls, spec: Path) -> "PipelineHolder":
        return cls(spec, open_served(spec, 1))

    @property
    def generation(self) -> int:
        return self.current.generation

    @contextlib.contextmanager
    def lease(self) -> Iterator[Served]:
        """The current pipeline, kept open until the ``with`` block ends."""
        with self._lock:
            served = self.current
            served.users += 1
        try:
            yield served
        finally:
            with self._lock:
                served.users -= 1
                close = served.retired and served.users == 0 and not served.closed
                if close:
                    served.closed = True
            if close:
                self._close_later(served)

    def reload(self) -> Served:
        """Open the spec anew and swap it in; on any error the old pipeline stays."""
        with self._reload_lock:
            with self.learn_lock:        # learned state on disk is complete while opening
                new = open_served(self.spec, self.current.generation + 1)
                with self._lock:
                    old, self.current = self.current, new
                    old.retired = True
                    close = old.users == 0 and not old.closed
                    if close:
                        old.closed = True
            if close:
                self._close_later(old)
            log.warning("reloaded %s: generation %d (spec %s), opened in %.2f s", self.spec,
                        new.generation, new.plan.spec.hash, new.open_seconds)
            return new

    def _close_later(self, served: Served) -> None:
        """Close a retired pipeline on its own thread (not on the batch worker's)."""
        def close() -> None:
            try:
                served.close()
            except Exception:
                log.exception("closing pipeline generation %d failed", served.generation)
            del served.pipeline
            gc_policy.retired()

        t = threading.Thread(target=close, name="ltrr-close", daemon=True)
        self._closers = [c for c in self._closers if c.is_alive()] + [t]
        t.start()

    def close(self, timeout: float = 30.0) -> None:
        """Close the current pipeline (at shutdown, after the workers stopped)."""
        for t in self._closers:
            t.join(timeout)
        with self._lock:
            served = self.current
            if served.closed:
                return
            served.closed = True
        served.close()
