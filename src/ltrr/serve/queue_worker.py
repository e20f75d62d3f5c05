"""One worker thread fed by the event loop: the shape of the batcher and of the feedback
intake.

The event loop puts items (each with its future) on a queue; one dedicated thread takes
what is waiting (a subclass decides how much: a batch of queries, a commit of feedback
bodies), handles it, and delivers every item's outcome — a result or the exception that
refused it — back to the loop. The thread never dies of a failed handling: each item of
the group gets the error. ``stop`` handles what is queued, then ends the thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Any, Generic, TypeVar

log = logging.getLogger("ltrr.serve")

T = TypeVar("T")


def deliver(loop: asyncio.AbstractEventLoop, futures: list[asyncio.Future],
            outcomes: list[Any]) -> None:
    """Resolve ``futures`` on their event loop, from any thread: an exception outcome
    becomes the future's exception. A closed loop (shutdown) is ignored."""

    def settle() -> None:
        for fut, out in zip(futures, outcomes):
            if fut.done():           # the client went away
                continue
            if isinstance(out, BaseException):
                fut.set_exception(out)
            else:
                fut.set_result(out)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:
        pass


class QueueWorker(Generic[T]):
    """Items queued from the event loop, handled in groups on one thread."""

    #: the thread's name
    thread_name = "ltrr-worker"

    def __init__(self) -> None:
        self._queue: deque[T] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def _put(self, item: T) -> None:
        """Queue ``item`` (from the event loop); RuntimeError once stopping."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            self._queue.append(item)
            self._cond.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Handle what is queued, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- what a subclass provides -------------------------------------------------------

    def _gather(self, queue: deque[T]) -> list[T]:
        """The next group from a non-empty ``queue``, under the lock (``self._cond`` may
        be waited on for more). Default: everything queued."""
        group = list(queue)
        queue.clear()
        return group

    def _handle(self, group: list[T]) -> list[Any]:
        """One outcome per item: its result, or the exception that refused it."""
        raise NotImplementedError

    @staticmethod
    def _future(item: T) -> asyncio.Future:
        return item.future      # type: ignore[attr-defined]

    # --- the thread -----------------------------------------------------------------------

    def _take(self) -> list[T] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            return self._gather(self._queue)

    def _run(self) -> None:
        while True:
            group = self._take()
            if group is None:
                return
            try:
                outcomes = self._handle(group)
            except BaseException as exc:          # never let the thread die
                log.exception("%s: handling %d items failed", self.thread_name, len(group))
                outcomes = [exc] * len(group)
            assert self._loop is not None
            deliver(self._loop, [self._future(item) for item in group], outcomes)
