"""Benchmarks: the same task on every backend, side by side (``polyrlm bench
TASK``), and benchmarks of polyrlm itself (``polyrlm bench perf``, ``fanout``,
``exec``); each suite module runs as a script and writes JSON.

The Python API::

    from polyrlm.plugins.bench import compare, get_task

    records = compare("sniah", backends=["python-inline", "sql"], sizes=[10_000])
    for r in records:
        print(r.backend, r.strategy, r.score, r.wall_s)
"""

from __future__ import annotations

from polyrlm.plugins.bench.compare import METHODS, backend_status, compare, parse_sizes
from polyrlm.plugins.bench.methods import RunRecord, run_base, run_rlm, run_strategy
from polyrlm.plugins.bench.strategy import MAP_REDUCE, Strategy
from polyrlm.plugins.bench.task import Instance, Task, UnknownTask, get_task, get_tasks

__all__ = [
    "MAP_REDUCE",
    "METHODS",
    "Instance",
    "RunRecord",
    "Strategy",
    "Task",
    "UnknownTask",
    "backend_status",
    "compare",
    "get_task",
    "get_tasks",
    "parse_sizes",
    "run_base",
    "run_rlm",
    "run_strategy",
]
