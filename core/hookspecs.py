"""Every plugin hook of polyrlm, typed and documented.

A plugin is a module or object with functions marked ``@hookimpl``. Plugins
are found through the ``polyrlm`` entry-point group::

    [project.entry-points.polyrlm]
    mybackend = "mypackage.polyrlm_plugin"

The built-in backends register through the very same entry points and hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from polyrlm.bench.task import Task
    from polyrlm.events import Event
    from polyrlm.registry import BackendSpec

__all__ = ["PROJECT", "hookimpl", "hookspec"]

#: pluggy project name, also the entry-point group.
PROJECT = "polyrlm"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    """Register environments by calling ``register(BackendSpec(...))``.

    Keep the module that implements this hook light: name the environment
    class by its import path (``BackendSpec.target``) so that its heavy
    dependencies load only when the backend is used, and list the modules
    it needs in ``BackendSpec.requires`` so that ``polyrlm backends`` can
    tell what is missing and which extra installs it.
    """


@hookspec
def on_event(event: Event) -> None:
    """Called for every event of every run (run started, model called, code
    executed, answer set, run finished), in the order they happen.

    Called from the run's event loop thread: do little, never block long.
    Exceptions raised here propagate and stop the run.
    """


@hookspec
def register_tasks(register: Callable[[Task], None]) -> None:
    """Register benchmark tasks for ``polyrlm bench`` by calling
    ``register(task)`` with an instance of a :class:`polyrlm.bench.task.Task`
    subclass: a deterministic generator (``build(rng, seed, size)``), the
    scorer (``score(instance, answer)``) and, optionally, scripted strategies
    (``strategies()``). The built-in tasks (``sniah``, ``oolong``,
    ``oolong-pairs``, ``codeqa``, ``multihop``) register through this hook
    from :mod:`polyrlm.bench.tasks`. Task names must be unique.
    """
