"""JSONL logging as a plugin (the file format itself is
:mod:`polyrlm.trajectory`, which ``RLM(log=path)`` writes).

* ``POLYRLM_LOG_DIR=DIR``: every run of the process writes its trajectory to
  ``DIR/<root run id>.jsonl`` (:mod:`.plugin`, loaded through the entry
  point), with no change to the code that makes the runs;
* :class:`JsonlLogger`: an instance registered as a plugin
  (``plugin_manager().register(JsonlLogger(path))``) logs every run of the
  process into one file.
"""

from __future__ import annotations

from polyrlm.events import Event
from polyrlm.hookspecs import hookimpl
from polyrlm.trajectory import TrajectoryWriter, load_trajectory, read_trajectory

__all__ = ["JsonlLogger", "load_trajectory", "read_trajectory"]


class JsonlLogger(TrajectoryWriter):
    """A :class:`~polyrlm.trajectory.TrajectoryWriter` that is a plugin."""

    @hookimpl
    def on_event(self, event: Event) -> None:
        super().on_event(event)
