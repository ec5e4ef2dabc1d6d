"""A third-party task through the register_tasks hook, and the perf suite's
measurements (the full suite is a slow test; its parts run by default)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from polyrlm import hookimpl
from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.compare import compare
from polyrlm.plugins.bench.isolation_cost import main as isolation_main
from polyrlm.plugins.bench.load_probe import measure
from polyrlm.plugins.bench.perf import PROMPT_FLAT_TOLERANCE, probe_backend
from polyrlm.plugins.bench.perf import main as perf_main
from polyrlm.plugins.bench.strategy import Strategy
from polyrlm.plugins.bench.task import Instance, Task, get_task, get_tasks
from polyrlm.registry import plugin_manager


class CountTask(Task):
    """How many lines: a toy task a plugin might bring."""

    name: ClassVar[str] = "count-lines"
    description: ClassVar[str] = "count the lines"
    metric: ClassVar[str] = "exact"
    default_sizes: ClassVar[tuple[int, ...]] = (1_000,)
    min_size: ClassVar[int] = 10
    max_size: ClassVar[int] = 100_000

    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        lines = ["x" * rng.randint(1, 7) for _ in range(size // 2)]
        return Instance(
            task=self.name, seed=seed, size=size, context="\n".join(lines),
            question="How many lines?", expected=len(lines),
        )  # fmt: skip

    def score(self, instance: Instance, answer: Any) -> float:
        return float(str(answer).strip() == str(instance.expected))

    def strategies(self) -> dict[str, Strategy]:
        code = {"python": ("FINAL(len(context.splitlines()))",)}
        return {"count": Strategy("count", "count with code", code)}


class Plugin:
    def __init__(self, task: Task) -> None:
        self.task = task

    @hookimpl
    def register_tasks(self, register: Callable[[Task], None]) -> None:
        register(self.task)


@pytest.fixture
def plugged() -> Iterator[Plugin]:
    plugin = Plugin(CountTask())
    plugin_manager().register(plugin)
    get_tasks.cache_clear()
    try:
        yield plugin
    finally:
        plugin_manager().unregister(plugin)
        get_tasks.cache_clear()


def test_a_plugin_task_joins_the_builtin_ones(plugged: Plugin) -> None:
    assert "count-lines" in get_tasks() and "sniah" in get_tasks()
    records = compare("count-lines", backends=["python-inline"], sizes=[500], instances=2)
    assert [r.score for r in records] == [1.0, 1.0] and records[1].seed == 1
    assert get_task("count-lines") is plugged.task


def test_a_task_registered_twice_is_a_clear_error(plugged: Plugin) -> None:
    twin = Plugin(CountTask())
    plugin_manager().register(twin)
    get_tasks.cache_clear()
    try:
        with pytest.raises(ConfigError, match="'count-lines' is registered twice"):
            get_tasks()
    finally:
        plugin_manager().unregister(twin)


def test_the_root_prompt_stays_flat_as_the_context_grows() -> None:
    records = measure("python-inline", [1_000, 1_000_000])
    assert [r["chars"] for r in records] == [1_000, 1_000_000]
    small, large = (r["system_chars"] for r in records)
    assert large / small - 1 <= PROMPT_FLAT_TOLERANCE
    assert all(r["load_s"] > 0 and r["host_peak_mb"] > 0 for r in records)


def test_the_load_probe_runs_in_a_fresh_process() -> None:
    records = probe_backend("python-inline", [1_000, 100_000], timeout_s=120)
    assert [r["chars"] for r in records] == [1_000, 100_000]
    assert all(r["backend"] == "python-inline" and r["peak_exact"] for r in records)
    with pytest.raises(RuntimeError, match="nonexistent"):
        probe_backend("nonexistent", [1_000], timeout_s=120)


@pytest.mark.slow
def test_perf_quick_writes_its_tables_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "perf.json"
    assert perf_main(["--quick", "--backends", "python-inline,nonexistent", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for title in ("1. sub-call fan-out", "2. per-exec", "3. context load", "4. root system prompt"):
        assert title in printed
    assert "unavailable: not registered" in printed
    data = json.loads(out.read_text())
    assert data["fanout"]["python-inline"]["vs_bare"] > 0
    assert data["exec"]["python-inline"]["vs_bare"] > 1
    assert [r["chars"] for r in data["load"]["python-inline"]] == [1_000, 100_000, 1_000_000]


def test_the_isolation_benchmark_compares_each_backend_on_and_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "iso.json"
    args = ["--repeats", "3", "--rounds", "1", "--context-chars", "1000", "--out", str(out)]
    assert isolation_main(["--backends", "sql,bash", *args]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"sql", "bash"}
    for row in results.values():
        assert row["exec_ratio"] > 0 and row["load_ratio"] > 0
    assert "isolation on vs off" in capsys.readouterr().out
