"""The FastAPI application: /search, /feedback, /health, /metrics, /admin/reload.

Request bodies are parsed by the endpoints themselves (``model_validate_json``) so
that bad JSON is a 400, a validation error a 422 naming the field, and both share
the error format of :mod:`ltrr.serve.errors`; the OpenAPI document still describes
them (``/docs``, ``/openapi.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from functools import partial
from time import perf_counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ltrr import __version__
from ltrr.errors import LtrrError
from ltrr.serve import gc_policy
from ltrr.serve.config import ServeConfig
from ltrr.serve.decisions import DecisionWriter
from ltrr.serve.docs import add_docs
from ltrr.serve.errors import ApiError, error_body, from_ltrr
from ltrr.serve.guard import RequestGuard
from ltrr.serve.holder import PipelineHolder, Served
from ltrr.serve.intake import FeedbackIntake
from ltrr.serve.learner import BackgroundLearner
from ltrr.serve.metrics import Metrics
from ltrr.serve.middleware import ServeMiddleware
from ltrr.serve.models import (ErrorResponse, FeedbackRequest, FeedbackResponse,
                               HealthResponse, ReloadResponse, SearchRequest, SearchResponse)
from ltrr.serve.search import SearchEndpoint
from ltrr.serve.workers import Refresher, Role, publish_learned

log = logging.getLogger("ltrr.serve")

POLL_S = 0.5      # with several workers: the leader looks for the others' events this often
SETTLE_S = 1.0    # ... and learns a part once this old (their decision logs flush in 0.2 s)

JSON = "application/json"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in (
        (400, "The body is not valid JSON, or the Host is not this server's."),
        (403, "A cross-origin request (see --allow-origin)."),
        (413, "The body is too large."), (415, "The body is not application/json."),
        (422, "A field is missing, unknown, of the wrong type or out of range."),
        (500, "A bug; the server logged it."), (503, "Shutting down, or the log is failing."))}


class Server:
    """The server's parts: pipeline holder, the /search and /feedback endpoints, decision
    writer, learner."""

    def __init__(self, config: ServeConfig, holder: PipelineHolder, role: Role = Role()):
        self.config, self.holder, self.role = config, holder, role
        self.metrics = Metrics(caches=lambda: holder.current.pipeline.caches)
        self.metrics.generation.set(holder.generation)
        self.started = time.time()
        self.stopping = False
        self.decisions = DecisionWriter()
        several = role.workers > 1
        self.learner = BackgroundLearner(
            holder, self.metrics, self.decisions, config.learn_interval_ms,
            enabled=role.leader, poll_s=POLL_S if several else None,
            settle_s=SETTLE_S if several else 0.0,
            on_learned=(lambda nodes: publish_learned(holder.current.plan.spec.state_dir,
                                                      nodes)) if several else None)
        self.refresher = None if role.leader else Refresher(holder)
        self.search = SearchEndpoint(config, holder, self.metrics, self.decisions)
        self.intake = FeedbackIntake(config, holder, self.metrics, self.decisions,
                                     self.learner)
        # (the generation reloads made current, the last reload's record), replaced as one
        # value: /health never shows a generation beside another reload's record
        self._reloads: tuple[int, dict[str, Any] | None] = (holder.generation, None)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        gc_policy.settle()          # what is loaded now lives as long as the server
        self.search.start(loop)
        self.intake.start(loop)
        self.learner.start()
        if self.refresher is not None:
            self.refresher.start()
        self.role.tell_supervisor("ready")      # serving, with its signal handlers set

    def stop(self) -> None:
        """Finish queued work, write the decision log, close the pipeline (blocking)."""
        self.stopping = True
        self.search.stop()
        self.intake.stop()
        self.learner.stop()
        if self.refresher is not None:
            self.refresher.stop()
        self.decisions.stop()
        self.holder.close()

    # --- reload ---------------------------------------------------------------------------

    def reload(self, propagate: bool = False) -> Served:
        """Swap in a freshly compiled pipeline (blocking); LtrrError if refused. With
        ``propagate``, the supervisor then reloads the other workers too."""
        started = perf_counter()
        try:
            served = self.holder.reload()
        except LtrrError as exc:
            self.metrics.reloads.labels("refused").inc()
            self._reloads = (self._reloads[0], {"at": time.time(), "ok": False,
                                                "error": str(exc)})
            log.error("reload refused, generation %d keeps serving: %s",
                      self.holder.generation, exc)
            raise
        except Exception as exc:
            self.metrics.reloads.labels("refused").inc()
            self._reloads = (self._reloads[0], {"at": time.time(), "ok": False,
                                                "error": f"{type(exc).__name__}: {exc}"})
            log.exception("reload failed, generation %d keeps serving", self.holder.generation)
            raise
        self.metrics.reloads.labels("ok").inc()
        self.metrics.generation.set(served.generation)
        self._reloads = (served.generation, {
            "at": time.time(), "ok": True, "generation": served.generation,
            "seconds": round(perf_counter() - started, 3)})
        self.learner.wake()
        if propagate:
            self.role.tell_supervisor("reload")
        return served

    def health(self) -> dict[str, Any]:
        generation, last_reload = self._reloads
        served = self.holder.current
        spec = served.plan.spec
        problems = self.learner.problems()
        status = "stopping" if self.stopping else "degraded" if problems else "ok"
        return {"status": status, "problems": problems, "spec": served.plan.model.name,
                "spec_path": str(spec.path), "spec_hash": spec.hash,
                "uptime_s": round(time.time() - self.started, 3),
                "generation": generation, "pending_events": self.learner.pending,
                "learning": self.refresher.stats() if self.refresher is not None else {
                    "role": self.role.name, "runs": self.learner.runs,
                    "errors": self.learner.errors, "last": self.learner.last,
                    "last_error": self.learner.last_error},
                "worker": {"index": self.role.index, "workers": self.role.workers,
                           "role": self.role.name, "pid": os.getpid()},
                "batches": self.search.batches,
                "caches": {node: cache.stats() for node, cache in
                           served.pipeline.caches.items()},
                "decision_log": {
                    "parts_written": self.decisions.parts, "error": self.decisions.error},
                "last_reload": last_reload, "version": __version__}


def _error_response(err: ApiError) -> Response:
    return Response(err.body(), status_code=err.status, media_type=JSON, headers=err.headers)


def create_app(config: ServeConfig, holder: PipelineHolder, role: Role = Role()
               ) -> tuple[Any, Server]:
    """The ASGI app (FastAPI wrapped in :class:`ServeMiddleware`) and its :class:`Server`."""
    server = Server(config, holder, role)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        server.start(asyncio.get_running_loop())
        yield
        await asyncio.get_running_loop().run_in_executor(None, server.stop)

    served = holder.current
    app = FastAPI(
        title=f"ltrr serve — {served.plan.model.name}",
        version=__version__,
        description=(
            "Search and feedback over one ltrr pipeline.\n\n"
            "1. `POST /search` a query; keep the `request_id` of the response.\n"
            "2. `POST /feedback` what the user did with the results (clicks, plays...), "
            "naming that `request_id`: the events are logged durably before the response, "
            "then the pipeline's learners (memory arm, policy, ranker) learn from them in "
            "the background.\n\n"
            "Every error is JSON `{\"error\", \"field\", \"hint\"}`: 400 invalid JSON or "
            "a Host that is not this server's, 401 admin token missing or wrong, 403 a "
            "cross-origin call, 408 a request too slow to arrive, 413 body too large, 415 "
            "a body that is not `application/json`, 422 invalid field, 431 headers too "
            "large, 503 shutting down or every connection taken."),
        lifespan=lifespan, docs_url=None, redoc_url=None)    # /docs: served locally
    app.state.server = server
    add_docs(app)

    # --- error handlers -----------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(exc)

    @app.exception_handler(LtrrError)
    async def _ltrr_error(request: Request, exc: LtrrError) -> Response:
        return _error_response(from_ltrr(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        hint = None
        if exc.status_code == 404:
            hint = "endpoints: POST /search, POST /feedback, GET /health, GET /metrics, " \
                   "POST /admin/reload, GET /docs"
        elif exc.status_code == 405:
            hint = "see GET /docs for each endpoint's method"
        return Response(error_body(str(exc.detail), hint=hint), status_code=exc.status_code,
                        media_type=JSON, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _request_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return Response(error_body(str(first.get("msg")), loc), status_code=422,
                        media_type=JSON)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path,
                  exc_info=exc)
        return Response(error_body(f"internal server error ({type(exc).__name__}); it is "
                                   "logged", hint="report it with the server log"),
                        status_code=500, media_type=JSON)

    # --- endpoints ----------------------------------------------------------------------

    @app.post("/search", response_model=SearchResponse, responses=_ERRORS,
              openapi_extra=_body("SearchRequest"), summary="Answer a query",
              description=(
                  "Runs the query through the pipeline (micro-batched with concurrent "
                  "requests) and logs the decision. The query is plain text: Lucene "
                  "syntax such as `name:x OR *:*` is searched as words. A blank query is "
                  "refused (422), as is one longer than `--max-query-chars`. A "
                  "`request_id` already used by a logged decision is refused (409): "
                  "feedback names one decision by it."))
    async def search(request: Request) -> Response:
        # POST /search is answered by ServeMiddleware's fast path (SearchEndpoint.answer);
        # this route documents it, and answers when the app is mounted without the
        # middleware
        status, payload, headers = await server.search.answer(
            await request.body(), perf_counter(), request.scope)
        return Response(payload, status_code=status, media_type=JSON, headers=headers)

    @app.post("/feedback", response_model=FeedbackResponse, responses=_ERRORS,
              openapi_extra=_body("FeedbackRequest"), summary="Log feedback events",
              description=(
                  "Validates the events, appends the ones not logged before (by `event_id`) "
                  "to the pipeline's event log and fsyncs it, then answers: an answered "
                  "event survives a crash. Learning follows in the background. Re-sending "
                  "the same events is safe (`new` counts what was added)."))
    async def feedback(request: Request) -> Response:
        body = await request.body()
        if server.stopping:
            raise ApiError(503, "the server is shutting down", headers={"Retry-After": "1"})
        status, payload, headers = await server.intake.answer(body)
        return Response(payload, status_code=status, media_type=JSON, headers=headers)

    @app.get("/health", response_model=HealthResponse, summary="Liveness and state",
             description="Spec, generation (reloads), uptime and the learner's progress.")
    async def health() -> Response:
        return Response(json.dumps(server.health()).encode(), media_type=JSON)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             description="Requests, latencies, batch sizes, events, learner runs and lag, "
                         "reloads, in the Prometheus text format.")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    @app.post("/admin/reload", response_model=ReloadResponse,
              responses={409: {"model": ErrorResponse,
                               "description": "The spec is broken; the old pipeline serves."}},
              summary="Reload the spec",
              description=(
                  "Compiles the spec file again, opens the new pipeline beside the live "
                  "one and swaps it in; requests in flight finish on the old one. A spec "
                  "that does not load is refused (409) with the located error, and the "
                  "old pipeline keeps serving. `kill -HUP <pid>` does the same."))
    async def reload() -> Response:
        loop = asyncio.get_running_loop()
        started = perf_counter()
        try:
            served = await loop.run_in_executor(None, partial(server.reload, propagate=True))
        except LtrrError as exc:
            raise ApiError(409, f"reload refused: {exc}", hint=(
                f"fix the spec and reload again; generation {holder.generation} keeps "
                "serving")) from None
        return Response(json.dumps({"generation": served.generation,
                                    "spec_hash": served.plan.spec.hash,
                                    "seconds": round(perf_counter() - started, 3)}).encode(),
                        media_type=JSON)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (SearchRequest, FeedbackRequest):
                doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(doc.pop("$defs", {}))
                components[model.__name__] = doc
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    wrapped = ServeMiddleware(app, limits={"/search": config.max_search_bytes,
                                           "/feedback": config.max_feedback_bytes},
                              default_limit=config.max_search_bytes, metrics=server.metrics,
                              search=server.search,
                              worker=role.index if role.workers > 1 else None,
                              guard=RequestGuard(config))
    return wrapped, server


def _body(model: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {JSON: {"schema": {
        "$ref": f"#/components/schemas/{model}"}}}}}

