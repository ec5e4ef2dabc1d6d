"""The benchmark plugin: the built-in tasks (``register_tasks``) and the
``polyrlm bench`` command (``register_commands``). The task modules load
when the tasks are asked for, not when the plugin does."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from polyrlm.hookspecs import NamedTask, hookimpl
from polyrlm.specs import Command

__all__ = ["register_commands", "register_tasks"]


@hookimpl
def register_tasks(register: Callable[[NamedTask], None]) -> None:
    from polyrlm.plugins.bench.tasks import builtin_tasks

    for task in builtin_tasks():
        register(task)


def _bench(argv: Sequence[str]) -> int:
    from polyrlm.plugins.bench.cli import main

    return main(argv)


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(
        Command(
            "bench",
            "benchmarks: a task on every backend, or a suite (perf, fanout, batch, ...)",
            _bench,
        )
    )
