"""POST /feedback, start to end: events logged durably before they are acknowledged.

:class:`FeedbackIntake` validates each /feedback body with the event model
(``ltrr.feedback.schema.Event``) and appends the events of all requests waiting at that
moment as one Parquet part of the pipeline's event log (group commit: one fsync for
many requests) through ``EventLog.append_unlogged``, which drops ids already logged;
ids are checked against the log's id index (``LoggedIds`` keeps it mapped), not by
re-reading every part on every append. Only then are the requests answered, and the learner
(``ltrr.serve.learner``) is woken.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from ltrr.errors import Location
from ltrr.feedback.events import LoggedIds
from ltrr.feedback.schema import context
from ltrr.serve.errors import ApiError, request_error
from ltrr.serve.models import FeedbackRequest
from ltrr.serve.queue_worker import QueueWorker

if TYPE_CHECKING:
    import polars as pl

    from ltrr.serve.config import ServeConfig
    from ltrr.serve.decisions import DecisionWriter
    from ltrr.serve.holder import PipelineHolder, Served
    from ltrr.serve.learner import BackgroundLearner
    from ltrr.serve.metrics import Metrics


log = logging.getLogger("ltrr.serve")

MAX_COMMIT_BYTES = 16 * 2 ** 20    # most request bytes committed as one part
FEEDBACK_EXAMPLE = ('{"events": [{"request_id": "<from /search>", "entity_id": "289", '
                    '"type": "click", "position": 1}]}')


def _where(i: int) -> Location:
    return Location(f"request field events[{i}]")


class _Request:
    __slots__ = ("body", "future")

    def __init__(self, body: bytes, future: asyncio.Future):
        self.body, self.future = body, future


class FeedbackIntake(QueueWorker[_Request]):
    """Validates, deduplicates and durably appends events; wakes the learner."""

    thread_name = "ltrr-feedback"

    def __init__(self, config: "ServeConfig", holder: "PipelineHolder", metrics: "Metrics",
                 decisions: "DecisionWriter", learner: "BackgroundLearner"):
        super().__init__()
        self.max_events = config.max_events
        self.holder, self.metrics = holder, metrics
        self.decisions, self.learner = decisions, learner
        self._known = LoggedIds()       # ids already in the event log

    async def answer(self, body: bytes) -> tuple[int, bytes, dict[str, str] | None]:
        """Status, JSON body and extra headers of a /feedback request: ``{"received",
        "new"}`` once its events are durable; ApiError if they are invalid."""
        try:
            future = self.submit(body)
        except RuntimeError as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from None
        try:
            received, new = await future
        except (TimeoutError, OSError) as exc:
            raise ApiError(503, f"the events were not logged: {exc}", hint="retry later; "
                           "nothing of this request was acknowledged",
                           headers={"Retry-After": "5"}) from None
        return 200, orjson.dumps({"received": received, "new": new}), None

    def submit(self, body: bytes) -> asyncio.Future:
        """Queue one request's body; resolves to ``(received, new)`` once its events are
        durable, or to the error that makes it invalid."""
        assert self._loop is not None, "FeedbackIntake.start was not called"
        req = _Request(body, self._loop.create_future())
        self._put(req)
        return req.future

    def parse(self, body: bytes, served: "Served") -> list[Any]:
        """A body's events, validated with the served pipeline's rules; ApiError if
        invalid."""
        rules = context(served.weights, served.plan.model.feedback.max_future_s)
        try:
            req = FeedbackRequest.model_validate_json(body, context=rules)
        except ValidationError as exc:
            raise request_error(exc, FeedbackRequest, FEEDBACK_EXAMPLE) from None
        if len(req.events) > self.max_events:
            raise ApiError(413, f"{len(req.events)} events in one request, more than the "
                           f"limit of {self.max_events}", field="events",
                           hint="split them over several requests, or raise --max-events")
        return req.events

    # --- writer thread ----------------------------------------------------------------

    def _gather(self, queue: deque[_Request]) -> list[_Request]:
        """The waiting requests, up to MAX_COMMIT_BYTES of bodies (at least one)."""
        taken, size = [], 0
        while queue and (not taken or size + len(queue[0].body) <= MAX_COMMIT_BYTES):
            req = queue.popleft()
            taken.append(req)
            size += len(req.body)
        return taken

    def _handle(self, reqs: list[_Request]) -> list[Any]:
        return self._commit(reqs)

    def _commit(self, reqs: list[_Request]) -> list[Any]:
        from ltrr.errors import LtrrError
        from ltrr.feedback.events import events_from_rows

        outcomes: list[Any] = [None] * len(reqs)
        frames: list[tuple[int, "pl.DataFrame"]] = []
        with self.holder.lease() as served:
            for i, req in enumerate(reqs):
                try:
                    events = self.parse(req.body, served)     # validated: rules and all
                    frames.append((i, events_from_rows(events, where=_where)))
                except (LtrrError, ApiError) as exc:
                    outcomes[i] = exc
            if frames:
                # the decisions these events answer become durable first
                self.decisions.flush()
                new_counts = self._append(served, frames)
                total_new = 0
                for i, frame in frames:
                    outcomes[i] = (frame.height, new_counts.get(i, 0))
                    total_new += new_counts.get(i, 0)
                    self.metrics.events_received.inc(frame.height)
                self.metrics.events_new.inc(total_new)
                if total_new:
                    self.learner.wake()
        return outcomes

    def _append(self, served: "Served", frames: list[tuple[int, "pl.DataFrame"]]
                ) -> dict[int, int]:
        """Append the events not logged yet as one part; new events per request."""
        import polars as pl

        from ltrr.feedback.ingest import event_log

        merged = pl.concat([f.with_columns(pl.lit(i, pl.Int32).alias("_req"))
                            for i, f in frames], how="vertical_relaxed")
        fresh, path = event_log(served.plan).append_unlogged(merged, self._known)
        if path is None:
            return {}
        self.learner.logged(path.name, fresh.height)
        return dict(fresh.group_by("_req").len().iter_rows())
