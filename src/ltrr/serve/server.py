"""Run the app on uvicorn (uvloop + httptools): one process with one pipeline, or
(``--workers N``) a supervisor and N worker processes (:mod:`ltrr.serve.supervisor`).

The spec is loaded, compiled and opened — and the port bound — before anything is
served, so a broken spec, a missing index or a taken port is an ``error:`` line and
exit 1. SIGTERM / SIGINT shut down gracefully (stop accepting, finish what is in
flight, write the logs, close the pipeline); SIGHUP reloads the spec.
"""

from __future__ import annotations

import contextlib
import dataclasses
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

FILES_RESERVED = 512          # open files kept for the pipeline beside the connections
NOFILE_UNLIMITED = 1 << 20    # what "unlimited" open files is taken to mean


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
    from ltrr.serve.protocol import guarded_protocol

    config = _fit_connections(config, raise_open_files_limit())
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


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to the hard limit (each connection
    is a file; a default soft limit of 1,024 is reached by a modest flood of idle ones);
    returns the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, NOFILE_UNLIMITED)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s",
                        soft, want, exc)
    return soft if soft != resource.RLIM_INFINITY else NOFILE_UNLIMITED


def _fit_connections(config: ServeConfig, files: int) -> ServeConfig:
    """``config`` with --max-connections lowered to what the open-files limit leaves
    beside the pipeline's own files (indexes, logs, the JVM's jars)."""
    room = files - FILES_RESERVED
    if config.max_connections <= room:
        return config
    fitted = max(1, room)
    log.warning("the open-files limit (%d) leaves room for %d connections: "
                "--max-connections lowered from %d (raise the limit with `ulimit -n`)",
                files, fitted, config.max_connections)
    return dataclasses.replace(config, max_connections=fitted)


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
