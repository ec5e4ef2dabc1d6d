"""Running blocking environment calls off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["bounded", "in_thread"]

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a new daemon thread. Not the default executor: nested
    child runs block their parent's thread, and a bounded pool would deadlock."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def deliver(ok: bool, value: Any) -> None:
        # A block abandoned at its timeout may finish after the run's loop
        # has ended: nobody waits for its result any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, ok, value)

    def work() -> None:
        try:
            value = ctx.run(fn, *args)
        except BaseException as exc:
            deliver(False, exc)
        else:
            deliver(True, value)

    threading.Thread(target=work, daemon=True, name="polyrlm-exec").start()
    return await future


async def bounded(awaitable: Awaitable[Any], seconds: float) -> None:
    """Await at most ``seconds``; what is still running then is left behind
    (a daemon thread: it dies with the process)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(awaitable, seconds)
