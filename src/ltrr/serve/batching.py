"""Micro-batching: concurrent /search requests answered by one ``Pipeline.run_batch`` call.

Requests queue up while the worker thread runs a batch; when it is free it takes
everything queued (up to ``max_batch``) at once. It waits up to ``max_wait_ms`` for
more only when requests have arrived at the server but are not queued yet (their
bodies are being read or validated): an idle server answers a lone request at once.
Results go back to the awaiting handlers on the event loop in one hand-off per batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable

from ltrr.serve.queue_worker import QueueWorker

if TYPE_CHECKING:
    from ltrr.serve.holder import PipelineHolder, Served
    from ltrr.serve.metrics import Metrics
    from ltrr.types import Decision, Query

log = logging.getLogger("ltrr.serve")

ANNOUNCED = "ltrr.announced"      # scope key: this request is counted in Batcher.announced


class Job:
    """One query waiting for its batch."""

    __slots__ = ("query", "k", "arrived", "queued", "started", "future")

    def __init__(self, query: "Query", k: int | None, arrived: float,
                 future: asyncio.Future):
        self.query, self.k, self.arrived, self.future = query, k, arrived, future
        self.queued = perf_counter()
        self.started = 0.0          # when its batch started


class Batcher(QueueWorker[Job]):
    """Gathers queries into batches run on one dedicated worker thread.

    ``respond(served, decision, job)`` turns each decision into the handler's result
    (on the worker thread). ``announced`` counts requests that reached /search but
    are not submitted yet; only the event loop changes it, through :meth:`announce` and
    :meth:`unannounce`.
    """

    thread_name = "ltrr-batcher"

    def __init__(self, holder: "PipelineHolder", metrics: "Metrics",
                 respond: Callable[["Served", "Decision", Job], Any], *,
                 max_batch: int, max_wait_ms: float,
                 after_batch: Callable[["Served", list["Decision"]], None] | None = None):
        super().__init__()
        self.holder, self.metrics, self.respond = holder, metrics, respond
        self.after_batch = after_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.announced = 0
        self.batches = 0

    def announce(self, scope: dict) -> None:
        """A /search request arrived (its body is still to read): batches forming now may
        wait for it. Counted once per request, in the request's ASGI ``scope``."""
        scope[ANNOUNCED] = True
        self.announced += 1

    def unannounce(self, scope: dict) -> None:
        """The request was submitted, refused or gone: stop waiting for it (idempotent)."""
        if scope.pop(ANNOUNCED, False):
            self.announced -= 1

    def submit(self, query: "Query", k: int | None, arrived: float) -> asyncio.Future:
        """Queue a query (from the event loop); the future resolves to its response."""
        assert self._loop is not None, "Batcher.start was not called"
        job = Job(query, k, arrived, self._loop.create_future())
        self._put(job)
        return job.future

    # --- worker thread ----------------------------------------------------------------

    def _gather(self, jobs: deque[Job]) -> list[Job]:
        batch = [jobs.popleft() for _ in range(min(self.max_batch, len(jobs)))]
        if len(batch) < self.max_batch and self.max_wait > 0 and self.announced > 0:
            deadline = perf_counter() + self.max_wait
            while len(batch) < self.max_batch:
                if jobs:
                    batch.append(jobs.popleft())
                    continue
                remaining = deadline - perf_counter()
                if remaining <= 0 or self.announced <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
        return batch

    def _handle(self, batch: list[Job]) -> list[Any]:
        return self._answer(batch)

    def _answer(self, batch: list[Job]) -> list[Any]:
        started = perf_counter()
        m = self.metrics
        for job in batch:
            job.started = started
            m.queue_seconds.observe(started - job.queued)
        with self.holder.lease() as served:
            try:
                decisions = served.pipeline.run_batch([j.query for j in batch])
            except Exception:
                if len(batch) == 1:
                    raise
                # isolate the query at fault: answer each alone
                log.exception("batch of %d failed; answering its queries one by one",
                              len(batch))
                return [self._answer_one(served, j) for j in batch]
            self.batches += 1
            m.batch_size.observe(len(batch))
            m.batch_seconds.observe(perf_counter() - started)
            if self.after_batch is not None:
                self.after_batch(served, decisions)
            return [self.respond(served, d, j) for d, j in zip(decisions, batch)]

    def _answer_one(self, served: "Served", job: Job) -> Any:
        try:
            decisions = served.pipeline.run_batch([job.query])
        except Exception as exc:
            log.exception("query %r failed", job.query.request_id)
            return exc
        if self.after_batch is not None:
            self.after_batch(served, decisions)
        return self.respond(served, decisions[0], job)
