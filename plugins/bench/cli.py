"""``polyrlm bench``: dispatch to a task comparison or a suite, and the help
that lists both (tasks come from the ``register_tasks`` hook)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence

__all__ = ["SUITES", "bench_help", "bench_main", "main"]

#: Benchmark suites by name: each module has ``main(argv) -> int`` and runs
#: as a script too. Tasks (``polyrlm bench TASK``) come from the
#: ``register_tasks`` hook.
SUITES = {
    "perf": "polyrlm.plugins.bench.perf",
    "fanout": "polyrlm.plugins.bench.fanout",
    "fanout-e2e": "polyrlm.plugins.bench.fanout_e2e",
    "exec": "polyrlm.plugins.bench.exec_overhead",
    "isolation": "polyrlm.plugins.bench.isolation_cost",
    "sql-needle": "polyrlm.plugins.bench.sql_needle",
    "bash-grep": "polyrlm.plugins.bench.bash_grep",
    "wasm-perf": "polyrlm.plugins.bench.wasm_perf",
    "batch": "polyrlm.plugins.bench.batch_speed",
    "pipelined": "polyrlm.plugins.bench.pipelined",
}

_SUITES = {
    "perf": "framework performance: fan-out, per-exec overhead, context load and memory, "
    "root prompt size (fake server; offline)",
    "fanout": "llm_batch fan-out against the fake server, beside a bare gather",
    "fanout-e2e": "fan-out end to end: RLM.completion of a 1,000-prompt block over a 2M-char "
    "context, beside a bare gather, at 0 s and 1 s latency, per backend",
    "exec": "per-exec overhead of a trivial statement per backend, beside a bare exec",
    "isolation": "what isolation costs: the kernel and bash sandboxed or not, SQL's worker or "
    "not, per exec and at start-up with a context loaded",
    "batch": "RLM.batch: needle runs one after another, on the local pool and on Ray "
    "(fake server at 1 s per call)",
    "pipelined": "pipelined turns against whole blocks: a streamed 3-statement block whose "
    "sub-calls take 2 s each, per backend",
}


def bench_help(suites: Mapping[str, str]) -> str:
    from polyrlm.plugins.bench.task import get_tasks

    tasks = get_tasks()
    width = max(len(n) for n in [*tasks, *suites])
    lines = [
        "usage: polyrlm bench TASK [--backends B,..] [--sizes N,..] "
        "[--method strategy|rlm|base] [options]",
        "       polyrlm bench SUITE [options]",
        "",
        "Run one task on every backend, side by side (a table, OUT/TASK.json, OUT/TASK.png),",
        "or a suite of framework benchmarks. `polyrlm bench NAME --help` shows the options.",
        "",
        "tasks (register_tasks hook):",
        *(f"  {n:<{width}}  {t.description}" for n, t in tasks.items()),
        "",
        "suites:",
        *(f"  {n:<{width}}  {_SUITES.get(n, f'module {suites[n]}')}" for n in suites),
    ]
    return "\n".join(lines)


def bench_main(argv: Sequence[str], suites: Mapping[str, str]) -> int:
    """Run ``polyrlm bench`` with ``argv`` (after ``bench``); ``suites`` maps a
    suite name to its module (each has ``main(argv) -> int``)."""
    from polyrlm.errors import ConfigError
    from polyrlm.plugins.bench.task import get_tasks

    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(bench_help(suites))
        return 0
    name = argv[0]
    if name in suites:
        return int(importlib.import_module(suites[name]).main(argv[1:]))
    if name in get_tasks():
        from polyrlm.plugins.bench.compare import main

        return main(argv)
    raise ConfigError(
        f"unknown benchmark {name!r}; tasks: {', '.join(get_tasks())}; suites: {', '.join(suites)}"
    )


def main(argv: Sequence[str]) -> int:
    """``polyrlm bench`` (the command the plugin registers)."""
    return bench_main(argv, SUITES)
