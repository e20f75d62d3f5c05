"""``--executor processes``: a pool of *spawned* worker processes on this machine.

Spawned, never forked: pyjnius starts one JVM per process and a forked child of a
process that started one inherits a JVM it cannot use (it hangs or crashes). Spawning
costs each worker a fresh interpreter and its imports (about a second for ltrr), paid
once per :meth:`ProcessExecutor.map`.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ltrr.executors import Executor, Failure, TaskError, call, raise_failure, task_names

#: the worker's state: what ``init`` returned, once per worker process
_STATE: dict[str, Any] = {}


def _init_worker(init) -> None:
    _STATE.clear()
    if init is not None:
        try:
            _STATE["state"] = init()
        except Exception as exc:  # reported with the first task this worker is given
            from ltrr.executors import failure

            _STATE["failed"] = failure(exc)


def _run(fn, task, stateful: bool):
    if "failed" in _STATE:
        return _STATE["failed"]
    return call(fn, _STATE.get("state"), task, stateful)


class ProcessExecutor(Executor):
    kind = "processes"

    def __init__(self, workers: int):
        self.workers = workers

    def map(self, fn, tasks, *, names=None, init=None, on_done=None):
        names = task_names(tasks, names)
        if not tasks:
            return []
        results: list[Any] = [None] * len(tasks)
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)),
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(init,))
        ok = False
        try:
            futures = {pool.submit(_run, fn, task, init is not None): i
                       for i, task in enumerate(tasks)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in sorted(done, key=futures.get):
                    i = futures[fut]
                    try:
                        result = fut.result()
                    except BrokenProcessPool as exc:
                        raise TaskError(f"task '{names[i]}' failed: its worker process died "
                                        "(killed, or out of memory)", task=names[i]) from exc
                    if isinstance(result, Failure):
                        raise_failure(result, names[i])
                    results[i] = result
                    if on_done:
                        on_done(i, result)
            ok = True
        finally:
            if not ok:       # a failed task: stop the others now, not when they finish
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
        return results
