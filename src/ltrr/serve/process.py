"""What a server process sets up before it serves: its listening socket, its logging,
its open-files limit and the connections that limit leaves room for. Shared by the
single-process server, the supervisor and the workers."""

from __future__ import annotations

import dataclasses
import logging
import socket
import sys

from ltrr.errors import RunError
from ltrr.serve.config import ServeConfig

log = logging.getLogger("ltrr.serve")

FILES_RESERVED = 512          # open files kept for the pipeline beside the connections
NOFILE_UNLIMITED = 1 << 20    # what "unlimited" open files is taken to mean


def listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
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


def setup_logging(level: str, name: str = "ltrr serve") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{name}: %(levelname)s %(message)s"))
    logger = logging.getLogger("ltrr.serve")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


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


def fit_connections(config: ServeConfig, files: int) -> ServeConfig:
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
