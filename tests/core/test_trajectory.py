"""The JSONL trajectory: one versioned event per line, flushed as it goes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyrlm import RLM
from polyrlm.config import SCHEMA_VERSION
from polyrlm.errors import ConfigError
from polyrlm.events import CodeExecuted, ModelCalled, RunFinished, RunStarted
from polyrlm.testing.scripted import ScriptedModel
from polyrlm.trajectory import TrajectoryWriter, load_trajectory, read_trajectory


def test_log_has_every_event_with_schema_version(tmp_path: Path) -> None:
    seen_while_running: list[int] = []
    log = tmp_path / "run.jsonl"

    def on_event(event: object) -> None:  # the file is flushed per event
        seen_while_running.append(len(log.read_text().splitlines()))

    root = ScriptedModel(["```python\nx = llm_query('hi')\n```", "```python\nFINAL(x)\n```"])
    sub = ScriptedModel(lambda m: "hello")
    result = RLM(root.model, sub.model, log=log, on_event=on_event).completion("q", "ctx")
    lines = log.read_text().splitlines()
    assert all(json.loads(line)["schema_version"] == SCHEMA_VERSION for line in lines)
    events = read_trajectory(log)
    assert [type(e) for e in events] == [type(e) for e in result.trajectory]
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    sub_call = next(e for e in events if isinstance(e, ModelCalled) and e.role == "sub")
    first_exec = next(e for e in events if isinstance(e, CodeExecuted))
    assert sub_call.exec_id == first_exec.exec_id  # the sub-call links to its code
    assert seen_while_running == list(range(1, len(lines) + 1))


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    root = ScriptedModel(["```python\nFINAL(1)\n```"])
    RLM(root.model, log=log).completion("q", "c")
    whole = read_trajectory(log)
    log.write_text(log.read_text() + '{"schema_version": 1, "event": "model_ca')
    assert read_trajectory(log) == whole


def test_closing_twice_is_harmless(tmp_path: Path) -> None:
    logger = TrajectoryWriter(tmp_path / "x.jsonl")
    logger.close()
    logger.close()
    assert (tmp_path / "x.jsonl").read_text() == ""


def test_version_one_reads_and_a_newer_version_says_upgrade(tmp_path: Path) -> None:
    old = tmp_path / "v1.jsonl"
    line = {"schema_version": 1, "event": "answer_set", "run_id": "r", "ts": 0.0, "answer": 3}
    old.write_text(json.dumps(line) + "\n")  # before exec_id existed
    assert [e.answer for e in read_trajectory(old)] == [3]  # type: ignore[union-attr]
    new = tmp_path / "v9.jsonl"
    future = {"schema_version": SCHEMA_VERSION + 1, "event": "brand_new", "run_id": "r"}
    new.write_text(json.dumps(future) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(ConfigError, match="upgrade polyrlm"):
        load_trajectory(new)
