"""``ltrr serve --workers N``: a supervisor process and N workers on one port.

The supervisor checks the spec (a broken one is an ``error:`` line before anything
starts), binds N listening sockets on the port with ``SO_REUSEPORT`` (the kernel
spreads new connections over them) and starts one worker per socket
(``python -m ltrr.serve.worker``), each opening its own pipeline. Worker 0 learns;
the others reload what it learned (:mod:`ltrr.serve.workers`).

It announces ``listening on http://host:port`` once every worker is ready, then:

* SIGTERM / SIGINT: stops the workers gracefully (each finishes its requests and
  writes its logs), then exits 0;
* SIGHUP, or ``POST /admin/reload`` on any worker: every worker reloads the spec;
* a worker that dies is started again on the same socket (connections queue
  meanwhile); one that keeps dying within seconds of its start stops the server.

The supervisor keeps the sockets open, never accepts on them, and holds no pipeline.
Workers are in their own process group (a terminal's Ctrl-C reaches the supervisor
only) and stop by themselves if the supervisor disappears.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ltrr.serve.config import ServeConfig

log = logging.getLogger("ltrr.serve")

ENV_CONFIG = "LTRR_SERVE_CONFIG"
ENV_WORKER = "LTRR_SERVE_WORKER"        # "index workers socket-fd control-fd"
QUICK_DEATH_S = 30.0                   # a worker dying this soon after its start ...
MAX_QUICK_DEATHS = 3                   # ... this many times in a row stops the server
STOP_TIMEOUT_S = 60.0


class _Worker:
    def __init__(self, index: int, sock, proc: subprocess.Popen):
        self.index, self.sock, self.proc = index, sock, proc
        self.started = time.monotonic()
        self.ready = False
        self.quick_deaths = 0


def supervise(config: ServeConfig) -> int:
    """Run ``config.workers`` workers until SIGTERM/SIGINT; returns the exit status."""
    from ltrr.compiler import load_plan
    from ltrr.serve.process import listen, setup_logging

    setup_logging(config.log_level)
    plan = load_plan(config.spec)                  # LtrrError → error line, exit 1
    first = listen(config.host, config.port, reuse_port=True)
    host, port = first.getsockname()[:2]
    socks = [first] + [listen(host, port, reuse_port=True)
                       for _ in range(config.workers - 1)]
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)
    env_config = json.dumps({**asdict(config), "spec": str(Path(config.spec).resolve())})
    flags = {"stop": False, "hup": False}

    def on_signal(sig, frame) -> None:
        flags["hup" if sig == signal.SIGHUP else "stop"] = True

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def spawn(index: int) -> _Worker:
        sock = socks[index]
        env = {**os.environ, ENV_CONFIG: env_config,
               ENV_WORKER: f"{index} {config.workers} {sock.fileno()} {write_fd}"}
        proc = subprocess.Popen([sys.executable, "-m", "ltrr.serve.worker"], env=env,
                                pass_fds=(sock.fileno(), write_fd), process_group=0)
        return _Worker(index, sock, proc)

    workers = [spawn(i) for i in range(config.workers)]
    buffer = b""
    announced = False
    status = 0
    try:
        while not flags["stop"]:
            ready, _, _ = select.select([read_fd], [], [], 0.2)
            if ready:
                chunk = os.read(read_fd, 4096)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    _message(line.decode(errors="replace"), workers)
            if flags["hup"]:
                flags["hup"] = False
                _signal_all([w for w in workers if w.ready], signal.SIGHUP)
            if not announced and all(w.ready for w in workers):
                announced = True
                pids = ", ".join(str(w.proc.pid) for w in workers)
                print(f"ltrr serve: pipeline '{plan.model.name}' (spec {plan.spec.hash}, "
                      f"{config.workers} workers: pids {pids}) listening on "
                      f"http://{host}:{port} (pid {os.getpid()}); API docs at /docs",
                      file=sys.stderr, flush=True)
            for i, w in enumerate(workers):
                rc = w.proc.poll()
                if rc is None or flags["stop"]:
                    continue
                if not announced:
                    # failed to start (its error is on stderr already)
                    log.error("worker %d exited with status %d while starting", i, rc)
                    status = 1
                    flags["stop"] = True
                    break
                quick = time.monotonic() - w.started < QUICK_DEATH_S
                deaths = w.quick_deaths + 1 if quick else 0
                if deaths >= MAX_QUICK_DEATHS:
                    log.error("worker %d exited %d times within %.0f s of starting; "
                              "stopping", i, deaths, QUICK_DEATH_S)
                    status = 1
                    flags["stop"] = True
                    break
                log.error("worker %d (pid %d) exited with status %d; starting it again",
                          i, w.proc.pid, rc)
                workers[i] = spawn(i)
                workers[i].quick_deaths = deaths
    finally:
        _stop(workers)
        for sock in socks:
            sock.close()
        os.close(read_fd)
        os.close(write_fd)
    print("ltrr serve: stopped", file=sys.stderr, flush=True)
    return status


def _message(line: str, workers: list[_Worker]) -> None:
    """A worker's line: ``ready <index>`` or ``reload <index>`` (reload the others)."""
    kind, _, index = line.partition(" ")
    if not index.isdigit() or int(index) >= len(workers):
        return
    i = int(index)
    if kind == "ready":
        workers[i].ready = True
    elif kind == "reload":      # (a worker still starting reads the new spec anyway)
        _signal_all([w for w in workers if w.index != i and w.ready], signal.SIGHUP)


def _signal_all(workers: list[_Worker], sig: int) -> None:
    for w in workers:
        if w.proc.poll() is None:
            try:
                w.proc.send_signal(sig)
            except ProcessLookupError:
                pass


def _stop(workers: list[_Worker]) -> None:
    """SIGTERM every worker, wait for them to finish, SIGKILL the ones that do not."""
    _signal_all(workers, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for w in workers:
        try:
            w.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d did not stop in %.0f s; killing it", w.index, STOP_TIMEOUT_S)
            w.proc.kill()
            w.proc.wait()
