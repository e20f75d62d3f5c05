"""The outermost ASGI layer: who may call, body size limits, request metrics, batch
announcements.

* Every request passes the :class:`~ltrr.serve.guard.RequestGuard` first (Host,
  Origin, JSON content type, admin token); a refusal is answered here, in the JSON
  error format, and a CORS preflight from an allowed origin is answered 204.
* A request body larger than its endpoint's limit is answered 413 in the JSON error
  format before the app sees it (from ``Content-Length`` when given, else while
  reading). Bodies are read whole here and replayed to the app.
* Every request is counted and timed by endpoint and status (``/metrics``).
* A POST to /search is *announced* to the search endpoint while its body is read, so a
  batch being gathered knows more queries are coming (see :mod:`ltrr.serve.search`).
* POST /search is answered here (``SearchEndpoint.answer``), past the web framework.
* An exception that escaped everything else becomes a JSON 500 (and is logged).
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ltrr.serve.errors import error_body
from ltrr.serve.metrics import ENDPOINTS

if TYPE_CHECKING:
    from ltrr.serve.guard import RequestGuard
    from ltrr.serve.metrics import Metrics
    from ltrr.serve.search import SearchEndpoint

log = logging.getLogger("ltrr.serve")

DRAIN_FACTOR = 4                  # an oversized body is read (and dropped) up to 4x the limit
CLIENT_GONE = 499                 # status counted for a request whose client left (nginx's)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _endpoint(path: str) -> str:
    return path if path in ENDPOINTS else "other"


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class ServeMiddleware:
    """Wraps the FastAPI app; see the module docstring."""

    def __init__(self, app, *, limits: dict[str, int], default_limit: int,
                 metrics: "Metrics", search: "SearchEndpoint", worker: int | None = None,
                 guard: "RequestGuard | None" = None):
        """``search.answer`` answers POST /search directly: the hot path skips the web
        framework's routing, dependency solving and response classes (a fifth of a
        worker's GIL time)."""
        self.app, self.limits, self.default_limit = app, limits, default_limit
        self.metrics, self.search = metrics, search
        self.guard = guard
        # with several workers, each response names the one that answered
        self.worker_header = None if worker is None else (b"x-ltrr-worker",
                                                          str(worker).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        path = scope["path"]
        status = 500
        sent = False
        extra: list[tuple[bytes, bytes]] = []       # added to every response
        if self.worker_header is not None:
            extra.append(self.worker_header)
        if self.guard is not None:
            extra += self.guard.cors(scope)

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = True
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        announced = scope["method"] == "POST" and path == "/search"
        if announced:
            self.search.announce(scope)
            self.metrics.inflight.inc()
        try:
            if self.guard is not None:
                refused = self.guard.check(scope)
                if refused is not None:
                    status = refused.status
                    await _respond(send, status, refused.body(), _encode(refused.headers))
                    return
                preflight = self.guard.preflight(scope)
                if preflight is not None:
                    status = 204
                    await send({"type": "http.response.start", "status": 204,
                                "headers": preflight})
                    await send({"type": "http.response.body", "body": b""})
                    return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                limit = self.limits.get(path, self.default_limit)
                body = await self._read(scope, receive, limit)
                if body is None:                     # client gone (or timed out)
                    status = CLIENT_GONE
                    return
                if isinstance(body, int):
                    status = 413
                    more = " or more" if body > limit * DRAIN_FACTOR else ""
                    await _respond(send, 413, error_body(
                        f"request body is larger than the {_size(limit)} this endpoint "
                        f"accepts ({_size(body)}{more})", hint=self._hint(path)), extra)
                    return
                if announced:
                    status, payload, headers = await self.search.answer(body, started, scope)
                    sent = True
                    await _respond(send, status, payload, _encode(headers) + extra)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:                     # a bug: log it, answer JSON
            log.exception("unhandled error on %s %s", scope["method"], path)
            if not sent:
                status = 500
                await _respond(send, 500, error_body(
                    f"internal server error ({type(exc).__name__}); it is logged",
                    hint="report it with the server log"))
        finally:
            if announced:
                self.metrics.inflight.dec()
                self.search.unannounce(scope)
            self.metrics.observe_request(_endpoint(path), status, perf_counter() - started)

    def _hint(self, path: str) -> str:
        if path == "/feedback":
            return ("send the events in several requests, or start the server with a larger "
                    "--max-feedback-bytes")
        if path == "/search":
            return "shorten the query or the context, or raise --max-search-bytes"
        return "send a smaller body"

    @staticmethod
    async def _read(scope: Scope, receive: Receive, limit: int) -> bytes | int | None:
        """The whole body; its size (int) when over ``limit``; None if the client left."""
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        cap = limit * DRAIN_FACTOR
        if declared is not None and declared > cap:
            return declared                  # not worth reading: answer now
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > cap:
                return size
            if not message.get("more_body", False):
                break
        if size > limit:
            return size
        return b"".join(chunks)


def _encode(headers: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]


def _replay(body: bytes, receive: Receive) -> Receive:
    done = False

    async def replay() -> Message:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"
