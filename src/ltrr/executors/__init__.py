"""Where batch work runs: in this process, in spawned processes, or on Ray.

One small interface serves ``ltrr index``, ``evaluate``, ``simulate`` and ``train``::

    with open_executor(parse_executor("ray=10.0.0.5:6379")) as ex:
        results = ex.map(fn, tasks, names=[...], init=opener)

:meth:`Executor.map` returns ``fn``'s results **in task order**, whichever worker ran
what, so a caller that splits its work deterministically and merges in order gets the
same bytes from every executor. ``init`` makes a worker "open once, call many": each
worker calls ``init()`` once (e.g. opens the pipeline) and then ``fn(state, task)`` for
every task it is given; without ``init`` it calls ``fn(task)``. ``fn`` and ``init`` must
be picklable (module-level functions, ``functools.partial`` of them) for the
``processes`` and ``ray`` executors.

A task that fails raises one :class:`TaskError` naming the task, with the worker's own
message (an :class:`LtrrError` keeps its message and hint); the worker's traceback is
its ``detail``, not the user's screen. ``processes`` spawns its workers (never forks: a
JVM started by pyjnius does not survive a fork); Ray starts its own.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ltrr.errors import LtrrError, RunError

KINDS = ("local", "processes", "ray")


class TaskError(RunError):
    """A task run by an executor failed; ``task`` names it, ``detail`` is the worker's
    traceback."""

    def __init__(self, message: str, *, task: str, detail: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.task = task
        self.detail = detail


@dataclass(frozen=True)
class ExecutorSpec:
    """What ``--executor`` asked for: ``kind`` (local, processes, ray), a Ray cluster
    ``address`` (None: start a local Ray), ``workers`` (None: one per core)."""

    kind: str = "local"
    address: str | None = None
    workers: int | None = None

    def __str__(self) -> str:
        return self.kind + (f"={self.address}" if self.address else "")


def parse_executor(text: str | None, workers: int | None = None) -> ExecutorSpec:
    """``local``, ``processes`` or ``ray[=ADDRESS]`` (``ray=auto``: the cluster this
    machine belongs to) → an :class:`ExecutorSpec`."""
    kind, sep, address = (text or "local").strip().partition("=")
    kind = kind.strip().lower()
    if kind not in KINDS:
        import difflib

        close = difflib.get_close_matches(kind, KINDS, n=1, cutoff=0.5)
        raise RunError(f"unknown executor '{text}'", field="--executor",
                       hint=(f"did you mean '{close[0]}'? " if close else "")
                       + "one of: local, processes, ray, ray=ADDRESS")
    if sep and (kind != "ray" or not address.strip()):
        raise RunError(f"--executor {text}: only ray takes an address (ray=HOST:PORT)",
                       field="--executor", hint="e.g. --executor ray=10.0.0.5:6379")
    if workers is not None and workers < 1:
        raise RunError(f"--workers must be positive, got {workers}", field="--workers")
    return ExecutorSpec(kind, address.strip() or None, workers)


# --- the failure of one task, carried back from any worker -------------------------------

@dataclass
class Failure:
    """What a worker sends back instead of raising (a Ray or pool traceback would bury
    the message): the exception's type, its one-line message, hint and traceback."""

    kind: str
    message: str
    hint: str | None
    detail: str


def failure(exc: BaseException) -> Failure:
    if isinstance(exc, LtrrError):        # its own words: file:line, node, field, hint
        return Failure(type(exc).__name__, exc.render(), exc.hint, traceback.format_exc())
    text = str(exc).strip().splitlines()
    return Failure(type(exc).__name__, f"{type(exc).__name__}: {text[0] if text else ''}"
                   .rstrip(": "), None, traceback.format_exc())


def call(fn: Callable, state: Any, task: Any, stateful: bool) -> Any:
    """Run one task in a worker; a failure comes back as a :class:`Failure` value."""
    try:
        return fn(state, task) if stateful else fn(task)
    except Exception as exc:   # the whole point: any failure becomes one clean line
        return failure(exc)


class Loaded:
    """A worker's current job: ``(fn, init)`` loaded from their pickle and ``init()``
    run, once per distinct pickle — a worker kept across maps reopens only when the
    job changes. A failure to load or open is every task's failure."""

    def __init__(self, loads: Callable[[bytes], Any]):
        self.loads = loads
        self.code: bytes | None = None
        self.fn: Any = None
        self.stateful = False
        self.state: Any = None
        self.failed: Failure | None = None

    def run(self, code: bytes, task: Any) -> Any:
        if code != self.code:
            self.code, self.failed, self.state = code, None, None
            try:
                self.fn, init = self.loads(code)
                self.stateful = init is not None
                self.state = init() if init is not None else None
            except Exception as exc:
                self.failed = failure(exc)
        if self.failed is not None:
            return self.failed
        return call(self.fn, self.state, task, self.stateful)


def raise_failure(f: Failure, name: str) -> None:
    raise TaskError(f"task '{name}' failed: {f.message}", task=name, detail=f.detail)


# --- executors ----------------------------------------------------------------------------

Done = Callable[[int, Any], None]


class Executor:
    """Runs tasks and returns their results in task order (see the module docstring)."""

    kind = "local"
    workers = 1

    def map(self, fn: Callable, tasks: Sequence[Any], *, names: Sequence[str] | None = None,
            init: Callable[[], Any] | None = None, on_done: Done | None = None) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def task_names(tasks: Sequence[Any], names: Sequence[str] | None) -> list[str]:
    return list(names) if names is not None else [f"#{i}" for i in range(len(tasks))]


class LocalExecutor(Executor):
    """Every task in this process, in order: the reference every other executor matches."""

    def map(self, fn, tasks, *, names=None, init=None, on_done=None):
        names = task_names(tasks, names)
        if not tasks:
            return []
        state = init() if init is not None else None
        out = []
        try:
            for i, task in enumerate(tasks):
                result = call(fn, state, task, init is not None)
                if isinstance(result, Failure):
                    raise_failure(result, names[i])
                out.append(result)
                if on_done:
                    on_done(i, result)
        finally:     # what init opened (a pipeline) is closed here; a worker's, at its exit
            close = getattr(state, "close", None)
            if callable(close):
                close()
        return out


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def open_executor(spec: ExecutorSpec | str | None) -> Executor:
    """The executor ``spec`` names (a string is parsed); close it when done."""
    if not isinstance(spec, ExecutorSpec):
        spec = parse_executor(spec)
    if spec.kind == "processes":
        from ltrr.executors.processes import ProcessExecutor

        return ProcessExecutor(spec.workers or default_workers())
    if spec.kind == "ray":
        from ltrr.executors.ray import RayExecutor

        return RayExecutor(spec.address, spec.workers)
    return LocalExecutor()


def shards(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into ``parts`` contiguous pieces whose sizes differ by at most
    one (fewer when ``n < parts``): a split that depends on nothing but ``n`` and
    ``parts``."""
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + size + (i < extra)
        out.append(range(lo, hi))
        lo = hi
    return [r for r in out if len(r)]
