"""Run the app on uvicorn (uvloop + httptools): one process with one pipeline, or
(``--workers N``) a supervisor and N worker processes (:mod:`ltrr.serve.supervisor`).

The spec is loaded, compiled and opened — and the port bound — before anything is
served, so a broken spec, a missing index or a taken port is an ``error:`` line and
exit 1. SIGTERM / SIGINT shut down gracefully (stop accepting, finish what is in
flight, write the logs, close the pipeline); SIGHUP reloads the spec.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator

from ltrr.errors import LtrrError
from ltrr.serve.config import ServeConfig
from ltrr.serve.process import (fit_connections, listen, raise_open_files_limit,
                                setup_logging)
from ltrr.serve.workers import Role



def serve(config: ServeConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    raise_open_files_limit()            # before the pipeline opens its files (workers inherit)
    if not config.loopback:
        print(f"ltrr serve: warning: {config.host} is not a loopback address: anyone who "
              "reaches the port can search and post feedback"
              + ("" if config.admin_token else "; /admin/* is off (no admin token set)"),
              file=sys.stderr, flush=True)
    if config.workers > 1:
        from ltrr.serve.supervisor import supervise

        return supervise(config)
    from ltrr.serve.holder import PipelineHolder

    setup_logging(config.log_level)
    holder = PipelineHolder.open(config.spec)          # LtrrError → error line, exit 1
    try:
        sock = listen(config.host, config.port)
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
    from ltrr.serve.protocol import guarded_protocol

    config = fit_connections(config, raise_open_files_limit())
    app, server = create_app(config, holder, role)
    uconfig = uvicorn.Config(app, loop="uvloop", lifespan="on", ws="none",
                             http=guarded_protocol(config, server.metrics.connection_closed),
                             log_level=config.log_level, access_log=config.access_log,
                             timeout_graceful_shutdown=30,
                             timeout_keep_alive=config.keepalive_timeout_s,  # type: ignore
                             server_header=False)
    userver = _uvicorn_server(uconfig, server)
    server.metrics.connections_open.set_function(lambda: len(userver.server_state.connections))
    userver.run(sockets=[sock])


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
