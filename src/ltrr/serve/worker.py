"""One worker of ``ltrr serve --workers N`` (started by :mod:`ltrr.serve.supervisor`).

``python -m ltrr.serve.worker`` with the supervisor's environment: the server
options, this worker's index, the listening socket and the control pipe it inherits.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path


def _watch_parent(parent: int) -> None:
    """Stop gracefully if the supervisor disappears (killed, not just stopped)."""
    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="ltrr-parent-watch", daemon=True).start()


def main() -> int:
    from ltrr.errors import LtrrError
    from ltrr.serve.config import ServeConfig
    from ltrr.serve.holder import PipelineHolder
    from ltrr.serve.process import setup_logging
    from ltrr.serve.server import run_worker
    from ltrr.serve.supervisor import ENV_CONFIG, ENV_WORKER
    from ltrr.serve.workers import Role

    options = json.loads(os.environ[ENV_CONFIG])
    config = ServeConfig(**{**options, "spec": Path(options["spec"])})
    index, workers, sock_fd, control_fd = (int(x) for x in os.environ[ENV_WORKER].split())
    role = Role(index=index, workers=workers, control_fd=control_fd)
    _watch_parent(os.getppid())
    setup_logging(config.log_level, name=f"ltrr serve [worker {index}]")
    sock = socket.socket(fileno=sock_fd)
    try:
        holder = PipelineHolder.open(config.spec)
    except LtrrError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 1
    run_worker(config, holder, sock, role)        # tells the supervisor once it serves
    return 0


if __name__ == "__main__":
    sys.exit(main())
