"""The progress plugin: while ``polyrlm run`` or ``polyrlm replay`` runs
(``command_session``), every event of its runs (``on_event``) updates the
live view."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from polyrlm.hookspecs import hookimpl

if TYPE_CHECKING:
    from polyrlm.events import Event
    from polyrlm.plugins.progress.view import Progress

__all__ = ["SHOWN_FOR", "command_session", "on_event"]

#: The commands whose runs the view shows (bench and demo print a line per run).
SHOWN_FOR = ("run", "replay")

_active: list[Progress] = []


@contextlib.contextmanager
def _showing() -> Iterator[None]:
    from polyrlm.plugins.progress.view import Progress

    with Progress() as progress:  # draws nothing unless stderr is a terminal
        _active.append(progress)
        try:
            yield
        finally:
            _active.remove(progress)


@hookimpl
def command_session(command: str) -> AbstractContextManager[object] | None:
    return _showing() if command in SHOWN_FOR else None


@hookimpl
def on_event(event: Event) -> None:
    for progress in _active:
        progress.on_event(event)
