"""The built-in benchmark tasks, registered through the ``register_tasks``
hook like any plugin's (the registry's plugin manager loads this module)."""

from __future__ import annotations

from collections.abc import Callable

from polyrlm.bench.codeqa import CodeqaTask
from polyrlm.bench.multihop import MultihopTask
from polyrlm.bench.oolong import OolongTask
from polyrlm.bench.oolong_pairs import OolongPairsTask
from polyrlm.bench.sniah import SniahTask
from polyrlm.bench.task import Task
from polyrlm.hookspecs import hookimpl

__all__ = ["register_tasks"]


@hookimpl
def register_tasks(register: Callable[[Task], None]) -> None:
    for task in (SniahTask(), OolongTask(), OolongPairsTask(), CodeqaTask(), MultihopTask()):
        register(task)
