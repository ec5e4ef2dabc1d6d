"""Records that end early: a killed run's trajectory (no ``run_finished``,
perhaps a half-written last line) is read, replayed and compared as far as
it goes, and every reader says where it ends."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from polyrlm import RLM
from polyrlm.cli import main
from polyrlm.errors import ConfigError
from polyrlm.records import ReplayReport
from polyrlm.replay import replay
from polyrlm.testing.scripted import ScriptedModel
from polyrlm.trajectory import load_trajectory, load_trajectory_file, read_trajectory

# The suite's fixture would replay each replay made here too: a replay that
# stopped where a killed record ends has no record of the calls refused past
# it, so replaying it again is not a test of anything.
pytestmark = pytest.mark.no_replay("these replays stop where a killed record ends")

FAN_OUT = """```python
chunks = [context[i:i + 30] for i in range(0, len(context), 30)]
notes = llm_batch([f"Find the code in: {c}" for c in chunks])
hits = [n for n in notes if n != "NONE"]
print(len(chunks), "chunks", hits)
```"""
FINISH = "```python\nFINAL(hits[0])\n```"
CONTEXT = "filler text " * 10 + "the code is 42-XY " + "more filler " * 10


def finder(messages: list[dict[str, Any]]) -> str:
    return "42-XY" if "42-XY" in messages[-1]["content"] else "NONE"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """A finished run's trajectory: a fan-out step, then the answer."""
    root, sub = ScriptedModel([FAN_OUT, FINISH]), ScriptedModel(finder)
    path = tmp_path / "run.jsonl"
    result = RLM(root.model, sub.model, log=path).completion("What is the code? (é)", CONTEXT)
    assert result.answer == "42-XY"
    return path


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def kind(line: str) -> str:
    return str(json.loads(line)["event"])


def cut(log: Path, keep: int, torn: str = "") -> Path:
    """The first ``keep`` lines of ``log``, then ``torn`` (a half-written line)."""
    out = log.with_name(f"cut-{keep}.jsonl")
    out.write_text("".join(line + "\n" for line in lines_of(log)[:keep]) + torn)
    return out


def report_of(path: Path) -> ReplayReport:
    report = replay(path).replay
    assert report is not None
    return report


def test_a_record_without_run_finished_replays_its_prefix(log: Path) -> None:
    lines = lines_of(log)
    assert kind(lines[-1]) == "run_finished"
    killed = cut(log, len(lines) - 1)
    report = report_of(killed)
    assert report.identical, report.summary()
    assert report.record_ended_early and report.record_lines == len(lines) - 1
    assert report.incomplete_line is None and report.steps == report.matching_steps == 2
    assert report.summary().splitlines() == [
        "replay identical as far as the record goes: 2 steps",
        f"the record ends at line {len(lines) - 1} (the run did not finish)",
    ]


def test_a_half_written_last_line_is_reported_and_ignored(log: Path) -> None:
    lines = lines_of(log)
    batch = [n for n, line in enumerate(lines) if '"role":"sub"' in line]
    keep = batch[len(batch) // 2]  # killed in the middle of the llm_batch
    killed = cut(log, keep, torn=lines[keep][:50])
    record = load_trajectory_file(killed)
    assert (record.last_line, record.incomplete_line, record.ended_early) == (keep, keep + 1, True)
    assert record.notes() == [
        f"the record ends at line {keep} (the run did not finish)",
        f"line {keep + 1} is incomplete; ignored",
    ]
    report = report_of(killed)
    # The step in flight was never recorded: its sub-calls past the end are no divergence.
    assert report.identical and report.steps == 0, report.summary()
    assert report.incomplete_line == keep + 1 and report.record_lines == keep
    assert f"line {keep + 1} is incomplete; ignored" in report.summary()


def test_killed_between_steps_compares_the_recorded_step(log: Path) -> None:
    lines = lines_of(log)
    first_step = next(n for n, line in enumerate(lines, 1) if kind(line) == "code_executed")
    report = report_of(cut(log, first_step + 1))  # the step, then the next turn_started
    assert report.identical and report.steps == report.matching_steps == 1, report.summary()


def test_a_line_torn_inside_a_multibyte_character_is_incomplete_not_binary(log: Path) -> None:
    data = log.read_bytes()
    at = data.index("é".encode()) + 1  # the root run_started line holds the question
    killed = log.with_name("torn.jsonl")
    killed.write_bytes(data[:at])
    with pytest.raises(ConfigError, match="holds no complete event"):
        load_trajectory(killed)  # not "not UTF-8 text": the writer was killed mid-line
    lines = lines_of(log)
    second = log.with_name("torn2.jsonl")
    second.write_bytes((lines[0] + "\n").encode() + lines[1].encode()[:5] + b"\xc3")
    assert load_trajectory_file(second).incomplete_line == 2


def test_a_divergence_in_the_prefix_is_still_found(log: Path) -> None:
    lines = lines_of(log)
    step = next(n for n, line in enumerate(lines) if kind(line) == "code_executed")
    event = json.loads(lines[step])
    event["output"] += "forged"
    lines[step] = json.dumps(event)
    forged = log.with_name("forged.jsonl")
    forged.write_text("".join(line + "\n" for line in lines[:-1]))  # and killed at the end
    report = report_of(forged)
    assert not report.identical and report.record_ended_early
    assert [(d.what, d.position) for d in report.divergences] == [("output", step + 1)]
    summary = report.summary().splitlines()
    assert summary[0].startswith("replay diverged: 1 of 2 steps matched, 1 divergence(s)")
    assert summary[1] == f"the record ends at line {len(lines) - 1} (the run did not finish)"


def test_a_finished_record_still_needs_every_step(log: Path) -> None:
    report = report_of(log)
    assert report.identical and not report.record_ended_early and report.record_notes == ()
    assert report.record_lines == len(lines_of(log))


def test_a_child_run_killed_midway_is_no_divergence(tmp_path: Path) -> None:
    def root(messages: list[dict[str, Any]]) -> str:
        if "child task" in messages[1]["content"]:
            return "```python\nFINAL(llm_query('inner ' + context) + llm_query('again'))\n```"
        if len(messages) == 2:
            return "```python\nout = rlm_query('child task', 'abc')\nprint(out)\n```"
        return "```python\nFINAL(out)\n```"

    model, sub = ScriptedModel(root), ScriptedModel(lambda m: m[-1]["content"].upper())
    log = tmp_path / "tree.jsonl"
    result = RLM(model.model, sub.model, max_depth=2, log=log).completion("q", "ctx")
    assert result.answer == "INNER ABCAGAIN"
    lines = lines_of(log)
    first_sub = next(n for n, line in enumerate(lines, 1) if '"role":"sub"' in line)
    report = report_of(cut(log, first_sub))  # the child's second sub-call never recorded
    assert report.identical and report.record_ended_early, report.summary()
    assert report.record_lines == first_sub


def test_the_cli_replays_a_killed_run_and_says_so(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = lines_of(log)
    killed = cut(log, len(lines) - 3, torn=lines[-3][:20])
    assert main(["replay", str(killed)]) == 0
    out = capsys.readouterr().out
    assert "replay identical as far as the record goes" in out
    assert f"the record ends at line {len(lines) - 3} (the run did not finish)" in out
    assert f"line {len(lines) - 2} is incomplete; ignored" in out
    assert main(["replay", str(killed), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["record_ended_early"] is True and data["incomplete_line"] == len(lines) - 2


def test_a_line_separator_inside_an_output_is_not_a_line_end(tmp_path: Path) -> None:
    root = ScriptedModel(["```python\nprint('a\\u2028b\\u2029c\\x85d')\nFINAL(1)\n```"])
    path = tmp_path / "sep.jsonl"
    result = RLM(root.model, log=path).completion("q", "c")
    assert read_trajectory(path) == list(result.trajectory)


def test_a_fifo_is_refused_as_a_trajectory_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_trajectory(fifo)
