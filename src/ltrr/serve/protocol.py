"""Connection deadlines and a connection cap, which uvicorn's HTTP protocol lacks.

uvicorn times out a kept-alive connection between requests, and nothing else: a
connection that never sends a byte, or sends its headers a byte at a time (slowloris),
or its body a byte at a time, is held forever, and thousands of them use up the
process's file descriptors until no request is answered. Its ``limit_concurrency``
answers 503 to every request once that many connections are open, idle ones included.
This protocol (uvicorn's httptools one, subclassed) adds, per connection:

* a header deadline: a request's line and headers must arrive within
  ``header_timeout_s`` of its first byte — or of the connection, for the first request
  (408, then close; a connection that sent nothing is just closed);
* a body deadline: the body within ``body_timeout_s`` of the headers (408, close);
* a send deadline: a client that stops reading its answer (the send buffer full) for
  ``body_timeout_s`` is dropped;
* a header size limit, ``max_header_bytes`` (431, close): httptools buffers a header
  of any size;
* a cap of ``max_connections``: a new connection beyond it closes the longest-idle
  connection that is not in the middle of a request's body or answer (idle between
  requests, or still sending headers); if every connection is busy, the new one's
  request is answered 503 with ``Retry-After``.

Each close is counted in ``ltrr_connections_closed_total{reason}``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ltrr.serve.errors import error_body

IDLE, HEADERS, BODY, BUSY = "idle", "headers", "body", "busy"
EVICTABLE = {IDLE: 0, HEADERS: 1}     # phases a new connection may push out, first first
OVERFLOW = 256          # refused connections held (to answer 503) beyond the cap, at most
RETRY_AFTER_S = 1
LINGER_S = 2.0          # after an error answer, input is read and dropped this long at most


def _raw_response(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return (STATUS_LINE[status] + b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n" + extra +
            b"connection: close\r\n\r\n" + body)


def guarded_protocol(config: Any, closed: Callable[[str], None]) -> type:
    """The protocol class for ``uvicorn.Config(http=...)`` enforcing ``config``'s
    (a :class:`~ltrr.serve.config.ServeConfig`) limits; ``closed(reason)`` counts."""
    cap = config.max_connections
    header_s, body_s = config.header_timeout_s, config.body_timeout_s
    max_header = config.max_header_bytes
    too_many = error_body(
        f"too many open connections (this server takes {cap} per worker, every one "
        "busy with a request)", hint="retry in a moment; if the server has room for "
        "more, start it with a larger --max-connections")

    async def refuse(scope, receive, send) -> None:
        closed("refused")
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(too_many)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": too_many})

    class GuardedProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.phase = IDLE
            self.since = time.monotonic()         # in this phase since
            self.header_bytes = 0
            self.refused = False
            self.deadline = None
            self.send_deadline = None
            self.lingering = False

        # --- connection --------------------------------------------------------------

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm(header_s, self._header_timeout)   # the first request's headers
            if len(self.connections) > cap:
                self._make_room()

        def connection_lost(self, exc) -> None:
            self._disarm()
            self._disarm_send()
            super().connection_lost(exc)

        def _make_room(self) -> None:
            victim, best = None, None
            for conn in self.connections:      # the longest idle, else the slowest header
                rank = EVICTABLE.get(getattr(conn, "phase", BUSY))
                if conn is self or rank is None or conn.refused:
                    continue
                key = (rank, conn.since)
                if best is None or key < best:
                    victim, best = conn, key
            if victim is not None:
                closed("evicted")
                victim._close()
            elif len(self.connections) > cap + OVERFLOW:
                closed("refused")
                self._close()
            else:
                self.refused = True             # answered 503 once its request arrives

        def _close(self) -> None:
            self._disarm()
            self._unset_keepalive_if_required()
            if not self.transport.is_closing():
                self.transport.close()

        # --- deadlines -----------------------------------------------------------------

        def _arm(self, seconds: float, handler: Callable[[], None]) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(seconds, handler)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _header_timeout(self) -> None:
            self.deadline = None
            closed("header_timeout")
            if self.phase == HEADERS:
                self._answer(408, error_body(
                    f"the request's headers did not arrive within {header_s:g} s",
                    hint="send the whole request at once; a slower client needs the "
                    "server started with a larger --header-timeout"))
            else:
                self._close()

        def _body_timeout(self) -> None:
            self.deadline = None
            closed("body_timeout")
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                self._answer(408, error_body(
                    f"the request's body did not arrive within {body_s:g} s of its headers",
                    hint="send the body at once; a slower client needs the server started "
                    "with a larger --body-timeout"))
            else:
                self._close()

        def _answer(self, status: int, body: bytes) -> None:
            """A response written here, past the app (which then sees a disconnect)."""
            cycle = self.cycle
            if cycle is not None:
                cycle.response_started = cycle.response_complete = True
                cycle.disconnected = True
                cycle.message_event.set()
            if not self.transport.is_closing():
                self.transport.write(_raw_response(status, body))
                if self.transport.can_write_eof():
                    self._linger()
                    return
            self._close()

        def _linger(self) -> None:
            """End our side after the answer and drop what the client still sends, then
            close. Closing at once with unread input makes the kernel reset the connection,
            and a reset can discard the answer before the client reads it (a client still
            uploading an oversized header never saw its 431)."""
            self._disarm()
            self._unset_keepalive_if_required()
            self.lingering = True
            self.phase, self.since = IDLE, 0.0          # the first to be evicted
            self.transport.write_eof()
            self.deadline = self.loop.call_later(LINGER_S, self._close_now)

        def _close_now(self) -> None:
            self.deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def pause_writing(self) -> None:         # the client does not read
            super().pause_writing()
            if self.send_deadline is None:
                self.send_deadline = self.loop.call_later(body_s, self._send_timeout)

        def resume_writing(self) -> None:
            self._disarm_send()
            super().resume_writing()

        def _disarm_send(self) -> None:
            if self.send_deadline is not None:
                self.send_deadline.cancel()
                self.send_deadline = None

        def _send_timeout(self) -> None:
            self.send_deadline = None
            closed("send_timeout")
            self._disarm()
            self.transport.abort()              # close() would wait for the buffer to drain

        # --- parser callbacks ------------------------------------------------------------

        def data_received(self, data: bytes) -> None:
            if self.lingering:
                return                          # answered and ending: dropped unread
            if self.phase in (IDLE, HEADERS):
                self.header_bytes += len(data)
            super().data_received(data)
            if self.phase == HEADERS and self.header_bytes > max_header \
                    and not self.transport.is_closing():
                closed("header_too_large")
                self._answer(431, error_body(
                    f"the request's line and headers are larger than {max_header} bytes",
                    hint="send smaller headers, or start the server with a larger "
                    "--max-header-bytes"))

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.phase, self.since = HEADERS, time.monotonic()
            if self.deadline is None:           # a kept-alive connection's next request
                self._arm(header_s, self._header_timeout)

        def on_headers_complete(self) -> None:
            self.phase, self.since = BODY, time.monotonic()
            self.header_bytes = 0
            self._arm(body_s, self._body_timeout)
            if self.refused:
                app, self.app = self.app, refuse
                try:
                    super().on_headers_complete()
                finally:
                    self.app = app
            else:
                super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            self.phase, self.since = BUSY, time.monotonic()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.timeout_keep_alive_task is not None:    # waiting for the next request
                self.phase, self.since = IDLE, time.monotonic()
                self.header_bytes = 0

    return GuardedProtocol
