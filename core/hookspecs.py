"""Every plugin hook of polyrlm, typed and documented.

A plugin is a module or object with functions marked ``@hookimpl``. Plugins
are found through the ``polyrlm`` entry-point group::

    [project.entry-points.polyrlm]
    mybackend = "mypackage.polyrlm_plugin"

The built-in backends and the first-party plugins (``polyrlm.plugins``:
bench, view, demo, progress, jsonl) register through the very same entry
points and hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

import pluggy

from polyrlm.specs import BackendSpec, Command, ExecutorSpec

if TYPE_CHECKING:
    from polyrlm.events import Event

__all__ = ["PROJECT", "NamedTask", "hookimpl", "hookspec"]

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
def register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    """Register executors for :meth:`RLM.batch` (and ``polyrlm bench
    --executor``) by calling ``register(ExecutorSpec(name, target, ...))``;
    ``target`` names a :class:`polyrlm.batch.Executor` class by import path,
    loaded only when used. ``serial`` and ``local`` are the core's own;
    ``ray`` comes from the first-party plugin through this hook.
    """


@hookspec
def on_event(event: Event) -> None:
    """Called for every event of every run (run started, model called, code
    executed, answer set, run finished), in the order they happen.

    Called from the run's event loop thread: do little, never block long.
    Exceptions raised here propagate and stop the run.
    """


@hookspec
def register_commands(register: Callable[[Command], None]) -> None:
    """Add ``polyrlm`` subcommands by calling ``register(Command(name, help,
    main))``; ``polyrlm --help`` lists them. ``run``, ``backends`` and
    ``replay`` are the core's own; ``bench``, ``view`` and ``demo`` come from
    the first-party plugins through this hook. Command names must be unique.
    """


@hookspec
def command_session(command: str) -> AbstractContextManager[object] | None:
    """Return a context manager to hold open while the ``polyrlm`` command
    ``command`` (``"run"``, ``"replay"``, ``"bench"``, ...) runs, or None.

    What a plugin starts there (a live view of the runs, a tracer) sees the
    runs through :func:`on_event`; the manager is closed when the command
    ends, normally or not.
    """


class NamedTask(Protocol):
    """What the core knows of a benchmark task: its name and a line about
    it. The benchmark plugin's tasks are :class:`polyrlm.plugins.bench.task.Task`."""

    @property
    def name(self) -> str:
        """Unique among the registered tasks: ``polyrlm bench NAME``."""

    @property
    def description(self) -> str:
        """One line for ``polyrlm bench --help``."""


@hookspec
def register_tasks(register: Callable[[NamedTask], None]) -> None:
    """Register benchmark tasks for ``polyrlm bench`` by calling
    ``register(task)`` with an instance of a :class:`polyrlm.plugins.bench.task.Task`
    subclass: a deterministic generator (``build(rng, seed, size)``), the
    scorer (``score(instance, answer)``) and, optionally, scripted strategies
    (``strategies()``). The built-in tasks (``sniah``, ``oolong``,
    ``oolong-pairs``, ``codeqa``, ``multihop``) register through this hook
    from the benchmark plugin. Task names must be unique.
    """
