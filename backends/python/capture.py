"""Per-execution capture of stdout/stderr without mixing concurrent runs.

``sys.stdout``/``sys.stderr`` are replaced once by routers that write to the
sink of the current execution (a context variable, so each thread running a
cell has its own) and pass everything else to the stream they wrap. A sink
keeps at most ``limit`` characters and only counts the rest, so printing
gigabytes costs time, not memory.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from polyrlm.pycell import Sink

__all__ = ["capture"]


_sink: ContextVar[Sink | None] = ContextVar("polyrlm_capture_sink", default=None)
_install_lock = threading.Lock()


class _Router(io.TextIOBase):
    def __init__(self, wrapped: io.TextIOBase) -> None:
        self.wrapped = wrapped

    def write(self, text: str) -> int:
        sink = _sink.get()
        if sink is None:
            return self.wrapped.write(text)
        sink.write(str(text))
        return len(text)

    def flush(self) -> None:
        if _sink.get() is None:
            self.wrapped.flush()

    def isatty(self) -> bool:
        return False if _sink.get() is not None else self.wrapped.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


def _ensure_routers() -> None:
    # Re-checked per execution: a test runner may have swapped the streams since.
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _Router):
                setattr(sys, name, _Router(stream))


@contextmanager
def capture(limit: int) -> Iterator[Sink]:
    """Route this thread's (this context's) output into a new sink."""
    _ensure_routers()
    sink = Sink(limit)
    token = _sink.set(sink)
    try:
        yield sink
    finally:
        _sink.reset(token)
