"""Running RLM completions off the MCP server's event loop.

Each run gets a thread and an event loop of its own (as
:meth:`RLM.completion` would), so a run that computes, blocks or waits on a
provider never keeps the server from answering other requests (pings,
``backends``, other calls). At most ``max_runs`` run at once; further calls
wait for a slot, first come first served. A call the client cancels (or the
server's shutdown) cancels its run on the run's own loop: environments are
closed and ``run_finished`` is recorded, as for a cancelled
:meth:`RLM.acompletion`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from polyrlm.config import CLOSE_TIMEOUT_S
from polyrlm.provider import close_loop_clients
from polyrlm.threads import in_thread

__all__ = ["SHUTDOWN_GRACE_S", "Runs"]

T = TypeVar("T")

#: Seconds the server waits at exit for cancelled runs to close their
#: environments (each close is bounded by ``CLOSE_TIMEOUT_S``).
SHUTDOWN_GRACE_S = 2 * CLOSE_TIMEOUT_S + 1.0


class _Run:
    """One run on a loop of its own; :meth:`cancel` may come from any thread."""

    def __init__(self, done: Callable[[_Run], None]) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cancelled = False
        self._done = done
        self.finished = threading.Event()

    def work(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        try:
            return asyncio.run(self._main(make))
        finally:
            self.finished.set()
            self._done(self)

    async def _main(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        with self._lock:
            if self._cancelled:
                raise asyncio.CancelledError
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        try:
            return await make()
        finally:  # this loop ends here: so do the HTTP clients litellm made for it
            await close_loop_clients()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # its loop has already ended
                loop.call_soon_threadsafe(task.cancel)


class Runs:
    """The server's runs: at most ``most`` at once, each off the server's loop."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._slots: asyncio.Semaphore | None = None  # made on the server's loop
        self._lock = threading.Lock()
        self._active: set[_Run] = set()

    def _finished(self, run: _Run) -> None:
        with self._lock:
            self._active.discard(run)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._active)

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """``await make()`` on a loop of its own, once a slot is free."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.most)
        await self._slots.acquire()
        try:
            run = _Run(self._finished)
            with self._lock:
                self._active.add(run)
            try:
                return await in_thread(run.work, make)
            except asyncio.CancelledError:
                run.cancel()
                raise
        finally:
            self._slots.release()

    def drain(self, timeout_s: float = SHUTDOWN_GRACE_S) -> int:
        """Cancel what still runs and wait (at most ``timeout_s``) for it to
        close; the number of runs still open after that."""
        with self._lock:
            left = list(self._active)
        deadline = time.monotonic() + timeout_s
        for run in left:
            run.cancel()
        for run in left:
            run.finished.wait(max(0.0, deadline - time.monotonic()))
        return self.running
