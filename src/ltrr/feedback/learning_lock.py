"""One learning process per state folder.

A learner keeps what it learned in memory (the memory arm's table, a policy's model)
and saves it whole after each ``learn``, so two processes learning into one state
folder overwrite each other: ``ltrr feedback`` beside a running ``ltrr serve`` lost
5,756 of 12,446 learned events, silently. Whoever learns holds
``<state_dir>/.learner.lock`` (an ``fcntl.flock``, released when the process ends):
``ltrr serve`` (its leader worker) for as long as it runs, ``ltrr feedback`` /
``ltrr train`` while they learn. Another command waits for a command that holds it;
beside a server, ``ltrr feedback`` only logs its events and leaves learning them to
the server (which looks for parts other processes logged every second), and
``ltrr train`` is refused, naming the server.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ltrr.state import OwnerLock

LOCK_FILE = ".learner.lock"
SERVER_ROLE = "serve"
WAIT_POLL_S = 0.2        # how often a waiting command tries the lock again

log = logging.getLogger("ltrr")


def learner_lock(state_dir: Path) -> OwnerLock:
    """The lock of ``state_dir``'s learned state (not taken yet)."""
    return OwnerLock(Path(state_dir) / LOCK_FILE)


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 (ltrr serve s.yaml)`` for error messages."""
    pid = holder.get("pid", "?")
    command = holder.get("command")
    return f"pid {pid} ({command})" if command else f"pid {pid}"


@contextlib.contextmanager
def learning(state_dir: Path, role: str) -> Iterator[dict[str, Any] | None]:
    """Hold ``state_dir``'s learner lock for the block and yield None — or, when a server
    holds it, yield the server's description instead (the caller must not learn; the
    server learns every logged event itself). Waits while another command holds it."""
    lock = learner_lock(state_dir)
    waiting = False
    while not lock.try_acquire(role):
        holder = lock.holder()
        if holder.get("role") == SERVER_ROLE:
            yield holder
            return
        if not waiting and holder:
            log.warning("waiting for %s, which is learning into %s", describe(holder),
                        state_dir)
            waiting = True
        time.sleep(WAIT_POLL_S)
    try:
        yield None
    finally:
        lock.release()
