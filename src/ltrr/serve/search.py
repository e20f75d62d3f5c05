"""POST /search, start to end: one :class:`SearchEndpoint` on the hot path.

``answer(body)`` validates the body, claims its ``request_id`` and queues the query;
the endpoint's own worker thread gathers the queued queries into a micro-batch, runs
it through one ``Pipeline.run_batch`` call, hands the decisions to the decision
writer and builds each response body; the awaiting ``answer`` returns it. No other
object takes part on the way (the middleware calls ``answer`` past the web framework).

Micro-batching: requests queue while a batch runs; when the thread is free it takes
everything queued (up to ``max_batch``) at once. It waits up to ``max_wait_ms`` for
more only while requests have arrived but are not queued yet (*announced*: their
bodies are being read or validated), so an idle server answers a lone request at once.
If a batch fails, each of its queries is answered alone, isolating the one at fault.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from ltrr.errors import LtrrError
from ltrr.runtime.pipeline import new_request_id
from ltrr.runtime.request_ids import ServedRequestIds, reused_message
from ltrr.serve.errors import ApiError, from_ltrr, request_error
from ltrr.serve.models import SearchRequest
from ltrr.serve.queue_worker import QueueWorker
from ltrr.types import Query

if TYPE_CHECKING:
    from ltrr.serve.config import ServeConfig
    from ltrr.serve.decisions import DecisionWriter
    from ltrr.serve.holder import PipelineHolder, Served
    from ltrr.serve.metrics import Metrics
    from ltrr.types import Decision

log = logging.getLogger("ltrr.serve")

SEARCH_EXAMPLE = '{"query": "<what the user typed>"}'
ANNOUNCED = "ltrr.announced"      # scope key: this request is counted in `announced`
RETRY = {"Retry-After": "1"}

Answer = tuple[int, bytes, "dict[str, str] | None"]     # status, JSON body, extra headers


class Job:
    """One query waiting for its batch."""

    __slots__ = ("query", "k", "arrived", "queued", "started", "future")

    def __init__(self, query: Query, k: int | None, arrived: float,
                 future: asyncio.Future):
        self.query, self.k, self.arrived, self.future = query, k, arrived, future
        self.queued = perf_counter()
        self.started = 0.0          # when its batch started


class SearchEndpoint(QueueWorker[Job]):
    """Validates /search bodies, micro-batches their queries on one thread, logs the
    decisions and builds the responses.

    ``announced`` counts requests that reached /search but are not queued yet; only the
    event loop changes it, through :meth:`announce` and :meth:`unannounce`.
    """

    thread_name = "ltrr-search"

    def __init__(self, config: "ServeConfig", holder: "PipelineHolder", metrics: "Metrics",
                 decisions: "DecisionWriter"):
        super().__init__()
        self.config, self.holder, self.metrics, self.decisions = (
            config, holder, metrics, decisions)
        self.max_batch = config.max_batch
        self.max_wait = config.max_wait_ms / 1000.0
        self.request_ids = ServedRequestIds()     # a client's request_id names one decision
        self.announced = 0
        self.batches = 0

    # --- the event loop -------------------------------------------------------------------

    def announce(self, scope: dict) -> None:
        """A /search request arrived (its body is still to read): batches forming now may
        wait for it. Counted once per request, in the request's ASGI ``scope``."""
        scope[ANNOUNCED] = True
        self.announced += 1

    def unannounce(self, scope: dict) -> None:
        """The request was queued, refused or gone: stop waiting for it (idempotent)."""
        if scope.pop(ANNOUNCED, False):
            self.announced -= 1

    async def answer(self, body: bytes, arrived: float, scope: dict) -> Answer:
        """Status, JSON body and extra headers of a /search request, errors included."""
        try:
            try:
                future = self._submit(body, arrived)
            finally:
                self.unannounce(scope)
            return 200, await future, None
        except ApiError as err:
            return err.status, err.body(), err.headers
        except LtrrError as exc:
            err = from_ltrr(exc)
            return err.status, err.body(), err.headers

    def _submit(self, body: bytes, arrived: float) -> asyncio.Future:
        """Validate a body and queue its query; ApiError if it is refused."""
        try:
            req = SearchRequest.model_validate_json(body)
        except ValidationError as exc:
            raise request_error(exc, SearchRequest, SEARCH_EXAMPLE) from None
        served = self.holder.current
        self._check(req, served)
        if self._stopping:
            raise ApiError(503, "the server is shutting down", hint="retry on another "
                           "instance or after the restart", headers=RETRY)
        rid = req.request_id
        used = self.request_ids.of(served.decision_log) if rid is not None else None
        if used is not None and not used.claim(rid):
            error, hint = reused_message(rid)
            raise ApiError(409, error, field="request_id", hint=hint)
        assert self._loop is not None, "SearchEndpoint.start was not called"
        query = Query(rid or new_request_id(), req.query, req.user_id, req.context or {})
        job = Job(query, req.k, arrived, self._loop.create_future())
        try:
            self._put(job)
        except RuntimeError as exc:
            if used is not None:
                used.release(rid)
            raise ApiError(503, str(exc), headers=RETRY) from None
        if used is not None:        # no decision was made: the id stays free
            job.future.add_done_callback(lambda f: used.release(rid) if f.cancelled()
                                         or f.exception() is not None else None)
        return job.future

    def _check(self, req: SearchRequest, served: "Served") -> None:
        """The checks that depend on the server's options and the spec."""
        text, config = req.query, self.config
        if len(text) > config.max_query_chars:
            raise ApiError(422, f"query: {len(text):,} characters, more than the limit of "
                           f"{config.max_query_chars:,}", field="query", hint=(
                               "shorten the query, or start the server with a larger "
                               "--max-query-chars"))
        if not text.strip():
            raise ApiError(422, "query: empty or blank", field="query",
                           hint=f"send the words to search for, e.g. {SEARCH_EXAMPLE}")
        if req.k is not None and req.k > served.k_max:
            raise ApiError(422, f"k: {req.k} is more than the {served.k_max} results this "
                           "pipeline returns", field="k", hint=(
                               f"ask for at most {served.k_max} (the spec's output.k)"))

    # --- the batch thread -----------------------------------------------------------------

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
                return [self._handle_one(served, j) for j in batch]
            self.batches += 1
            m.batch_size.observe(len(batch))
            m.batch_seconds.observe(perf_counter() - started)
            self._log(served, decisions)
            return [self._respond(served, d, j) for d, j in zip(decisions, batch)]

    def _handle_one(self, served: "Served", job: Job) -> Any:
        try:
            decisions = served.pipeline.run_batch([job.query])
        except Exception as exc:
            log.exception("query %r failed", job.query.request_id)
            return exc
        self._log(served, decisions)
        return self._respond(served, decisions[0], job)

    def _log(self, served: "Served", decisions: list["Decision"]) -> None:
        if served.decision_log is not None:
            self.decisions.add(served.decision_log, decisions)

    def _respond(self, served: "Served", d: "Decision", job: Job) -> bytes:
        """A decision as the response body."""
        if d.dropped:
            self.metrics.searches_degraded.inc()
            for arm, reason in d.dropped.items():
                self.metrics.arms_dropped.labels(arm, reason).inc()
        catalog = served.catalog
        results = [{"rank": r.rank, "entity_id": r.entity_id,
                    "title": catalog.title_of(r.entity_id) if catalog is not None else None,
                    "score": r.score if math.isfinite(r.score) else None,
                    "arms": {c.arm: c.rank for c in r.sources}}
                   for r in d.ranking[:job.k or served.k_max]]
        if served.typed:
            for row, r in zip(results, d.ranking):
                row["type"] = r.entity_type
        timings = {key: round(v, 3) for key, v in d.timings_ms.items()}
        timings["queue"] = round((job.started - job.queued) * 1000.0, 3)
        timings["server"] = round((perf_counter() - job.arrived) * 1000.0, 3)
        return orjson.dumps({"request_id": d.request_id, "results": results,
                             "timings_ms": timings, "trace": d.trace})
