"""The Ray plugin: the ``ray`` executor for :meth:`RLM.batch` and ``polyrlm
bench --executor`` (``register_executors``). Ray itself loads only when the
executor is used."""

from __future__ import annotations

from collections.abc import Callable

from polyrlm.hookspecs import hookimpl
from polyrlm.specs import ExecutorSpec

__all__ = ["register_executors"]


@hookimpl
def register_executors(register: Callable[[ExecutorSpec], None]) -> None:
    register(
        ExecutorSpec(
            "ray",
            "polyrlm.plugins.ray.executor:RayExecutor",
            requires=("ray",),
            extra="ray",
            description="each run a Ray task: a local instance started on demand, "
            "or a cluster by address",
        )
    )
