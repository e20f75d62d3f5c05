"""``--executor processes``: a pool of *spawned* worker processes on this machine.

Spawned, never forked: pyjnius starts one JVM per process and a forked child of a
process that started one inherits a JVM it cannot use (it hangs or crashes). Spawning
costs each worker a fresh interpreter and its imports (about a second for ltrr), paid
once: the pool lives as long as the executor, and a worker reopens (``init``) only
when it is given another job.
"""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ltrr.executors import (Executor, Failure, Loaded, TaskError, default_workers,
                            raise_failure, task_names)

#: this worker process's current job
_JOB = Loaded(pickle.loads)


#: the thread pools of the numeric libraries a worker may load (OpenMP: faiss, torch;
#: BLAS; numba): sized to its share of the cores, as Ray sizes an actor's to its CPUs —
#: N workers each spinning up a pool per core would fight over the same cores
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMBA_NUM_THREADS")


def _limit_threads(n: int) -> None:
    import os

    for var in THREAD_VARS:
        os.environ.setdefault(var, str(n))


def _run(code: bytes, task):
    return _JOB.run(code, task)


class ProcessExecutor(Executor):
    kind = "processes"

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            share = max(1, default_workers() // self.workers)
            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_limit_threads, initargs=(share,))
        return self._pool

    def map(self, fn, tasks, *, names=None, init=None, on_done=None):
        names = task_names(tasks, names)
        if not tasks:
            return []
        code = pickle.dumps((fn, init))
        results: list[Any] = [None] * len(tasks)
        pool = self._get_pool()
        ok = False
        try:
            futures = {pool.submit(_run, code, task): i for i, task in enumerate(tasks)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
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
                self._stop(kill=True)
        return results

    def _stop(self, kill: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._stop()
