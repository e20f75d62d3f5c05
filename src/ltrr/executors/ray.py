"""``--executor ray[=ADDRESS]``: tasks on Ray actors, on this machine or a cluster.

One actor per worker (one CPU each, kept as long as the executor), each given one task
at a time: an actor that finishes early takes the next task (the slowest worker sets
the end, not a fixed split), and with ``init`` it opens what the tasks share once (the
pipeline, a JVM, an encoder) and keeps it for every task of that job. Results come
back in task order.

Without an address, a Ray already started in this process (``ray.init``) is used, else
a local one is started for the executor's lifetime. With ``ray=ADDRESS`` (or
``ray=auto``) this process joins that cluster; every node needs ltrr and the data the
spec names at the same paths (a shared file system), as the workers read them there.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from ltrr import extras
from ltrr.errors import RunError
from ltrr.executors import Executor, Failure, Loaded, TaskError, raise_failure, task_names


class _Worker:
    """The actor: one job at a time (:class:`Loaded`): ``fn`` and ``init`` arrive
    pickled and are loaded, and ``init()`` run, by the first task of a job — so a module
    the worker cannot import or an ``init`` that fails is that task's failure, not an
    actor that died in its constructor."""

    def __init__(self):
        from ray import cloudpickle

        self.job = Loaded(cloudpickle.loads)

    def run(self, code: bytes, task):
        return self.job.run(code, task)

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


class RayExecutor(Executor):
    kind = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None):
        extras.require(extras.RAY, "--executor ray", RunError)
        import ray

        self.started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "logging_level": logging.WARNING}
            if address is None and workers is not None:
                options["num_cpus"] = workers
            try:
                ray.init(address=address, **options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"at {address}" if address else "locally"
                raise RunError(f"cannot start or reach Ray {where}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc) else exc!r}",
                               field="--executor",
                               hint="check the address (`ray status` on the head node), or "
                                    "use --executor ray to start a local Ray") from exc
            self.started = True
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # more actors than CPUs would wait for a CPU that the others never give back
        self.workers = min(workers or cpus, cpus)
        self._actor = ray.remote(num_cpus=1)(_Worker)
        self._actors: list = []

    def _get_actors(self) -> list:
        if not self._actors:
            self._actors = [self._actor.remote() for _ in range(self.workers)]
        return self._actors

    def map(self, fn, tasks, *, names=None, init=None, on_done=None):
        import ray

        names = task_names(tasks, names)
        if not tasks:
            return []
        results: list[Any] = [None] * len(tasks)
        code = ray.put(ray.cloudpickle.dumps((fn, init)))
        actors = self._get_actors()[:len(tasks)]
        queue = deque(range(len(tasks)))
        inflight: dict[Any, tuple[int, Any]] = {}

        def give(actor) -> None:
            if queue:
                i = queue.popleft()
                inflight[actor.run.remote(code, tasks[i])] = (i, actor)

        ok = False
        try:
            for actor in actors:
                give(actor)
            while inflight:
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                i, actor = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:   # a worker died, a node was lost
                    first = str(exc).strip().splitlines()
                    raise TaskError(f"task '{names[i]}' failed: Ray lost its worker "
                                    f"({type(exc).__name__}: {first[0] if first else ''})",
                                    task=names[i], detail=str(exc)) from exc
                if isinstance(result, Failure):
                    raise_failure(result, names[i])
                results[i] = result
                if on_done:
                    on_done(i, result)
                give(actor)
            ok = True
        finally:
            if not ok:       # a failed task: stop the tasks still running
                self._kill()
        return results

    def nodes(self) -> list[str]:
        """The Ray node id of each worker (what tests check a cluster spreads over)."""
        import ray

        return ray.get([a.node.remote() for a in self._get_actors()])

    def _kill(self) -> None:
        import ray

        actors, self._actors = self._actors, []
        for actor in actors:
            ray.kill(actor)

    def close(self) -> None:
        self._kill()
        if self.started:
            import ray

            ray.shutdown()
            self.started = False
