"""Benchmark tasks: a deterministic generator plus the paper's scorer.

A task is a :class:`Task` subclass registered through the ``register_tasks``
hook (:mod:`polyrlm.hookspecs`); the built-in ones register from
:mod:`polyrlm.plugins.bench.plugin` through that very hook::

    from polyrlm import hookimpl

    @hookimpl
    def register_tasks(register):
        register(MyTask())

``generate(seed, size)`` must give the same :class:`Instance` for the same
seed and size on the same installation; ``size`` is in tokens (characters /
:data:`~polyrlm.config.CHARS_PER_TOKEN`).
"""

from __future__ import annotations

import abc
import functools
import random
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.contexts import text_size
from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.strategy import MAP_REDUCE, Strategy

__all__ = ["Instance", "Task", "UnknownTask", "get_task", "get_tasks"]


class UnknownTask(ConfigError):
    """No benchmark task of that name is registered."""


class Instance(BaseModel):
    """One generated question over one context, with its expected answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = Field(description="Name of the task that generated it.")
    seed: int = Field(description="Seed it was generated from.")
    size: int = Field(description="Requested size of the context, in tokens.")
    context: str | list[str] | dict[str, Path] = Field(
        description="The long input: a text, documents, or named tables (CSV or Parquet "
        "files, each loaded as the backend loads a table file)."
    )
    question: str = Field(description="What the model is asked.")
    expected: Any = Field(description="The gold answer, as the scorer takes it.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The question in structured form, filled into scripted strategies.",
    )
    meta: dict[str, Any] = Field(
        default_factory=dict, description="Facts about the instance worth recording."
    )

    @property
    def chars(self) -> int:
        """Characters of the context (documents summed)."""
        return text_size(self.context)

    @property
    def tokens(self) -> int:
        """Estimated tokens of the context."""
        return self.chars // CHARS_PER_TOKEN


class Task(abc.ABC):
    """A benchmark task. Subclasses set the class attributes and implement
    :meth:`build` and :meth:`score`."""

    #: Registry name, e.g. ``"sniah"``.
    name: ClassVar[str]
    #: One line shown by ``polyrlm bench --help``.
    description: ClassVar[str]
    #: How answers are scored, shown in the table title.
    metric: ClassVar[str]
    #: Sizes (tokens) used when none are given.
    default_sizes: ClassVar[tuple[int, ...]]
    #: Smallest and largest sizes (tokens) the generator accepts.
    min_size: ClassVar[int]
    max_size: ClassVar[int]

    def generate(self, seed: int, size: int) -> Instance:
        """The instance of ``seed`` at ``size`` tokens; the same every time."""
        if not self.min_size <= size <= self.max_size:
            raise ConfigError(
                f"task {self.name!r}: size {size:,} tokens is out of range "
                f"({self.min_size:,} to {self.max_size:,})"
            )
        # A string seed is hashed with SHA-512 by random: stable across runs and hosts.
        return self.build(random.Random(f"{self.name}:{seed}:{size}"), seed, size)

    @abc.abstractmethod
    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        """Generate the instance, drawing every random choice from ``rng``."""

    @abc.abstractmethod
    def score(self, instance: Instance, answer: Any) -> float:
        """The score in [0, 1] of ``answer`` (an environment's value or a reply's text)."""

    def scores(self, instance: Instance, answer: Any) -> dict[str, float]:
        """Every metric the task reports, by name, each in [0, 1] (the record's
        ``scores``); :meth:`score` is the one the table shows. By default just that one."""
        return {self.metric: self.score(instance, answer)}

    def strategies(self) -> dict[str, Strategy]:
        """Scripted root programs for this task, by name (see
        :mod:`polyrlm.plugins.bench.strategy`). Every task gets the generic map-reduce."""
        return {MAP_REDUCE.name: MAP_REDUCE}

    def backend_config(self, backend: str, instance: Instance) -> dict[str, Any] | None:
        """Backend options this instance needs (e.g. more WASM memory for large
        tables), passed as ``RLM(backend_config=...)``; None: the defaults."""
        return None

    def base_instruction(self, instance: Instance) -> str:
        """What the ``base`` method appends after the context: the question
        and the answer format the scorer expects (``params["answer_format"]``)."""
        answer_format = instance.params.get("answer_format", "Reply with the answer only.")
        return f"Question: {instance.question}\n{answer_format}"


@functools.cache
def get_tasks() -> dict[str, Task]:
    """Every task registered through ``register_tasks``, by name, sorted."""
    from polyrlm.registry import collect, plugin_manager, registered_twice

    pm = plugin_manager()
    tasks: dict[str, tuple[Task, str]] = {}

    def add(task: Task, plugin: str) -> None:
        if not isinstance(task, Task):
            raise ConfigError(f"plugin {plugin!r} registered {task!r}, not a Task")
        if task.name in tasks:
            raise registered_twice("benchmark task", task.name, tasks[task.name][1], plugin)
        tasks[task.name] = (task, plugin)

    collect(pm, pm.hook.register_tasks, add)
    return {name: tasks[name][0] for name in sorted(tasks)}


def get_task(name: str) -> Task:
    """The task registered as ``name``; :class:`UnknownTask` otherwise."""
    tasks = get_tasks()
    if name not in tasks:
        raise UnknownTask(f"unknown benchmark task {name!r}; tasks: {', '.join(tasks) or 'none'}")
    return tasks[name]
