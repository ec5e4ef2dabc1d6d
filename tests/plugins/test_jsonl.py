"""The JSONL plugin: POLYRLM_LOG_DIR logs every run of the process, one file
per recursion tree; JsonlLogger logs every run into one file."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyrlm import RLM
from polyrlm.events import RunStarted
from polyrlm.plugins.jsonl import JsonlLogger
from polyrlm.plugins.jsonl.plugin import LOG_DIR_ENV
from polyrlm.registry import plugin_manager
from polyrlm.replay import replay
from polyrlm.testing.scripted import ScriptedModel
from polyrlm.trajectory import read_trajectory


def _tree_run(question: str) -> str:
    def root(messages: list[dict[str, str]]) -> str:
        if "child" in messages[1]["content"]:
            return "```python\nFINAL(context.upper())\n```"
        if len(messages) == 2:
            return "```python\nkid = rlm_query('child task', context='abc')\n```"
        return "```python\nFINAL(kid)\n```"

    result = RLM(ScriptedModel(root).model, max_depth=2).completion(question, "ctx")
    assert result.answer == "ABC"
    return result.trajectory[0].run_id


def test_log_dir_gets_one_replayable_file_per_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert plugin_manager().get_plugin("jsonl") is not None  # loaded through its entry point
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path))
    first, second = _tree_run("one"), _tree_run("two")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{first}.jsonl", f"{second}.jsonl"]
    )
    events = read_trajectory(tmp_path / f"{first}.jsonl")
    starts = [e for e in events if isinstance(e, RunStarted)]
    assert [s.depth for s in starts] == [0, 1]  # the child's events are in its root's file
    again = replay(tmp_path / f"{second}.jsonl")
    assert again.answer == "ABC" and again.replay is not None and again.replay.identical


def test_nothing_is_written_without_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LOG_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    _tree_run("q")
    assert list(tmp_path.iterdir()) == []


def test_a_logger_registered_as_a_plugin_logs_every_run(tmp_path: Path) -> None:
    logger = JsonlLogger(tmp_path / "all.jsonl")
    plugin_manager().register(logger, name="test-all-runs")
    try:
        _tree_run("a")
        _tree_run("b")
    finally:
        plugin_manager().unregister(logger)
        logger.close()
    roots = [e for e in read_trajectory(tmp_path / "all.jsonl") if isinstance(e, RunStarted)]
    assert [(r.question, r.depth) for r in roots] == [
        ("a", 0),
        ("child task", 1),
        ("b", 0),
        ("child task", 1),
    ]
