"""Run the app on uvicorn (uvloop + httptools): one process with one pipeline, or
(``--workers N``) a supervisor and N worker processes (:mod:`ltrr.serve.supervisor`).

The spec is loaded, compiled and opened — and the port bound — before anything is
served, so a broken spec, a missing index or a taken port is an ``error:`` line and
exit 1. SIGTERM / SIGINT shut down gracefully (stop accepting, finish what is in
flight, write the logs, close the pipeline); SIGHUP reloads the spec.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator

from ltrr.errors import LtrrError, RunError
from ltrr.serve.config import ServeConfig
from ltrr.serve.workers import Role

log = logging.getLogger("ltrr.serve")


def _listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:            # several workers' sockets on one port; the kernel spreads
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)     # connections
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RunError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                       hint="choose another --port (0 picks a free one) or stop what uses "
                       "it") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _logging(level: str, name: str = "ltrr serve") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{name}: %(levelname)s %(message)s"))
    logger = logging.getLogger("ltrr.serve")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def serve(config: ServeConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    if config.workers > 1:
        from ltrr.serve.supervisor import supervise

        return supervise(config)
    from ltrr.serve.holder import PipelineHolder

    _logging(config.log_level)
    holder = PipelineHolder.open(config.spec)          # LtrrError → error line, exit 1
    try:
        sock = _listen(config.host, config.port)
    except LtrrError:
        holder.close()
        raise
    host, port = sock.getsockname()[:2]
    served = holder.current
    print(f"ltrr serve: pipeline '{served.plan.model.name}' (spec {served.plan.spec.hash}, "
          f"opened in {served.open_seconds:.1f} s) listening on http://{host}:{port} "
          f"(pid {os.getpid()}); API docs at /docs", file=sys.stderr, flush=True)
    run_worker(config, holder, sock, Role())
    print("ltrr serve: stopped", file=sys.stderr, flush=True)
    return 0


def run_worker(config: ServeConfig, holder, sock: socket.socket, role: Role) -> None:
    """Serve ``holder``'s pipeline on the listening ``sock`` until told to stop."""
    import uvicorn

    from ltrr.serve.app import create_app

    app, server = create_app(config, holder, role)
    uconfig = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="on",
                             log_level=config.log_level, access_log=config.access_log,
                             timeout_graceful_shutdown=30, timeout_keep_alive=30,
                             server_header=False)
    _uvicorn_server(uconfig, server).run(sockets=[sock])


def _uvicorn_server(config, server):
    """uvicorn's Server with our signals: SIGHUP reloads the spec, and a graceful stop
    returns (uvicorn's own handling re-raises the signal once it has shut down)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            saved = {sig: signal.signal(sig, self.handle_exit)
                     for sig in (signal.SIGINT, signal.SIGTERM)}
            saved[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hup)
            try:
                yield
            finally:
                for sig, handler in saved.items():
                    signal.signal(sig, handler)

        def _hup(self, sig, frame) -> None:
            def reload() -> None:
                with contextlib.suppress(Exception):   # logged; the old pipeline serves
                    server.reload()

            threading.Thread(target=reload, name="ltrr-reload", daemon=True).start()

    return Server(config)
