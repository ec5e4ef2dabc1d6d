"""``POLYRLM_LOG_DIR``: every run of the process logs its trajectory there,
one file per recursion tree (``<root run id>.jsonl``; a child run's events
go into its root's file), flushed per event like ``RLM(log=...)``."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from polyrlm.events import Event, RunFinished, RunStarted
from polyrlm.hookspecs import hookimpl
from polyrlm.trajectory import TrajectoryWriter

__all__ = ["LOG_DIR_ENV", "on_event"]

#: The environment variable naming the folder; unset, nothing is written.
LOG_DIR_ENV = "POLYRLM_LOG_DIR"

_lock = threading.Lock()  # runs may go on in several threads at once
_writers: dict[str, TrajectoryWriter] = {}  # root run id -> its file
_root_of: dict[str, str] = {}  # run id -> root run id, for the open trees


@hookimpl
def on_event(event: Event) -> None:
    folder = os.environ.get(LOG_DIR_ENV)
    if not folder and not _writers:
        return
    with _lock:
        if isinstance(event, RunStarted):
            if event.parent_run_id is None:
                if not folder:
                    return
                _root_of[event.run_id] = event.run_id
                _writers[event.run_id] = TrajectoryWriter(Path(folder) / f"{event.run_id}.jsonl")
            elif event.parent_run_id in _root_of:
                _root_of[event.run_id] = _root_of[event.parent_run_id]
        root = _root_of.get(event.run_id)
        if root is None:
            return
        _writers[root].on_event(event)
        if isinstance(event, RunFinished) and event.run_id == root:
            _writers.pop(root).close()
            for run in [r for r, top in _root_of.items() if top == root]:
                del _root_of[run]
