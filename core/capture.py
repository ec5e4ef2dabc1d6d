"""Capped output collection, shared by every backend that captures output.

A :class:`Sink` keeps at most ``limit`` characters and only counts the rest,
so printing gigabytes costs time, not memory.
"""

from __future__ import annotations

import threading

__all__ = ["Sink"]


class Sink:
    """Collected output of one execution, capped at ``limit`` characters."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            room = self.limit - self.kept
            if room > 0:
                piece = text[:room]
                self.parts.append(piece)
                self.kept += len(piece)
            self.dropped += max(0, len(text) - max(room, 0))

    def getvalue(self) -> str:
        return "".join(self.parts)
