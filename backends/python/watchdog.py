"""One thread that fires every in-process execution's deadline.

Arming a deadline is a heap push, not a thread start (a ``threading.Timer``
per execution costs more than the execution of a short block).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

__all__ = ["Watchdog", "watchdog"]


class Watchdog:
    """Calls ``fire()`` at a deadline unless disarmed first. ``fire`` runs on
    the watchdog thread under its lock: keep it short and lock-free."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, delay_s: float, fire: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._ids)
            heapq.heappush(self._heap, (time.monotonic() + delay_s, token, fire))
            self._live.add(token)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="polyrlm-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._live.discard(token)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # disarmed: dropped lazily
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token, fire = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(token)
                fire()


#: The process's watchdog.
watchdog = Watchdog()
