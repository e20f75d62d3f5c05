"""``--executor ray[=ADDRESS]``: tasks on Ray actors, on this machine or a cluster.

One actor per worker (one CPU each), each given one task at a time: an actor that
finishes early takes the next task (the slowest worker sets the end, not a fixed
split), and with ``init`` it opens what the tasks share once (the pipeline, a JVM,
an encoder) and keeps it for every task it runs. Results come back in task order.

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
from ltrr.executors import Executor, Failure, TaskError, call, failure, raise_failure, task_names


class _Worker:
    """The actor: ``fn`` and ``init`` come pickled and are loaded, and ``init()`` run,
    on the first task — so a module the worker cannot import or an ``init`` that fails
    is that task's failure, not an actor that died in its constructor."""

    def __init__(self, code: bytes):
        self.code = code
        self.fn: Any = None
        self.stateful = False
        self.state: Any = None
        self.failed: Failure | None = None

    def run(self, task):
        if self.code is not None:
            from ray import cloudpickle

            code, self.code = self.code, None
            try:
                self.fn, init = cloudpickle.loads(code)
                self.stateful = init is not None
                self.state = init() if init is not None else None
            except Exception as exc:
                self.failed = failure(exc)
        if self.failed is not None:
            return self.failed
        return call(self.fn, self.state, task, self.stateful)

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

    def map(self, fn, tasks, *, names=None, init=None, on_done=None):
        import ray

        names = task_names(tasks, names)
        if not tasks:
            return []
        results: list[Any] = [None] * len(tasks)
        code = ray.put(ray.cloudpickle.dumps((fn, init)))
        actors = [self._actor.remote(code) for _ in range(min(self.workers, len(tasks)))]
        queue = deque(range(len(tasks)))
        inflight: dict[Any, tuple[int, Any]] = {}

        def give(actor) -> None:
            if queue:
                i = queue.popleft()
                inflight[actor.run.remote(tasks[i])] = (i, actor)

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
        finally:
            for actor in actors:       # also stops the tasks still running after a failure
                ray.kill(actor)
        return results

    def nodes(self) -> list[str]:
        """The Ray node id of each worker (what tests check a cluster spreads over)."""
        import ray

        code = ray.put(ray.cloudpickle.dumps((None, None)))
        actors = [self._actor.remote(code) for _ in range(self.workers)]
        try:
            return ray.get([a.node.remote() for a in actors])
        finally:
            for a in actors:
                ray.kill(a)

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False
