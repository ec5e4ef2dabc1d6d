"""Replay: a recorded trajectory re-runs offline and is compared step by step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyrlm import RLM, StopReason
from polyrlm.cli import main
from polyrlm.errors import ConfigError
from polyrlm.events import CodeExecuted, ModelCalled, RunStarted
from polyrlm.recording import (
    REPLAY_INLINE_CONTEXT_CHARS,
    context_from_record,
    context_record,
    fingerprint,
)
from polyrlm.records import Role
from polyrlm.replay import replay
from polyrlm.testing.scripted import ScriptedModel

MAP = """```python
chunks = [context[i:i + 40] for i in range(0, len(context), 40)]
notes = llm_batch([f"Find the code in: {c}" for c in chunks])
hits = [n for n in notes if n != "NONE"]
print(len(chunks), "chunks", hits)
```"""
FINISH = "```python\nFINAL(hits[0])\n```"
CONTEXT = "filler text " * 20 + "the code is 42-XY " + "more filler " * 20


def finder(messages: list[dict[str, Any]]) -> str:
    return "42-XY" if "42-XY" in messages[-1]["content"] else "NONE"


def record(tmp_path: Path, replies: list[str] | None = None, **kw: Any) -> Path:
    root, sub = ScriptedModel(replies or [MAP, FINISH]), ScriptedModel(finder)
    log = tmp_path / "run.jsonl"
    result = RLM(root.model, sub.model, log=log, **kw).completion("What is the code?", CONTEXT)
    assert result.answer == "42-XY"
    return log


def edit(log: Path, match: Any, change: Any) -> tuple[Path, int]:
    """A copy of ``log`` with the first event that ``match``es changed; its line."""
    lines = log.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        event = json.loads(line)
        if match(event):
            change(event)
            lines[number - 1] = json.dumps(event)
            out = log.with_name("tampered.jsonl")
            out.write_text("\n".join(lines) + "\n")
            return out, number
    raise AssertionError("no event matched")


def test_replay_reproduces_every_step_without_a_provider(tmp_path: Path) -> None:
    log = record(tmp_path)
    result = replay(log)
    report = result.replay
    assert report is not None and report.identical, report and report.summary()
    assert result.answer == "42-XY" and result.stop_reason == StopReason.ANSWERED
    assert report.steps == report.matching_steps == 2
    subs = [e for e in result.trajectory if isinstance(e, ModelCalled) and e.role == Role.SUB]
    assert len(subs) == len(CONTEXT) // 40 + 1 and all(e.response for e in subs)
    assert "replay identical: 2 steps" in report.summary()


def test_rlm_replay_option_takes_events_in_memory() -> None:
    root, sub = ScriptedModel([MAP, FINISH]), ScriptedModel(finder)
    first = RLM(root.model, sub.model).completion("What is the code?", CONTEXT)
    again = RLM(root.model, sub.model, replay=first.trajectory).completion(
        "What is the code?", CONTEXT
    )
    assert again.replay is not None and again.replay.identical
    assert len(root.calls) == 2  # nothing was asked of the models the second time


def test_child_runs_are_matched_and_replayed(tmp_path: Path) -> None:
    def root(messages: list[dict[str, Any]]) -> str:
        if "child task" in messages[1]["content"]:
            return "```python\nFINAL(llm_query('inner ' + context))\n```"
        if len(messages) == 2:
            return "```python\nouts = rlm_batch(['child task', 'child task'], ['a', 'b'])\n```"
        return "```python\nFINAL('|'.join(outs))\n```"

    model, sub = ScriptedModel(root), ScriptedModel(lambda m: m[-1]["content"].upper())
    log = tmp_path / "tree.jsonl"
    result = RLM(model.model, sub.model, max_depth=2, log=log).completion("q", "ctx")
    assert result.answer == "INNER A|INNER B"
    again = replay(log)
    assert again.replay is not None and again.replay.identical, again.replay.summary()
    assert sum(isinstance(e, RunStarted) for e in again.trajectory) == 3


def test_tampered_output_is_found_at_its_step(tmp_path: Path) -> None:
    log = record(tmp_path)
    bad, line = edit(
        log,
        lambda e: e["event"] == "code_executed" and e["iteration"] == 1,
        lambda e: e.update(output=e["output"] + "extra"),
    )
    report = replay(bad).replay
    assert report is not None and not report.identical
    first = report.divergences[0]
    assert (first.position, first.what, first.step) == (line, "output", "root step 1 (turn 1)")
    assert report.matching_steps == 1
    assert main(["replay", str(bad)]) == 1


def test_tampered_reply_is_found_at_the_code_it_gave(tmp_path: Path) -> None:
    log = record(tmp_path)
    bad, reply_line = edit(
        log,
        lambda e: e["event"] == "model_called" and e["role"] == "root" and "FINAL" in e["response"],
        lambda e: e.update(response="```python\nFINAL('forged')\n```"),
    )
    report = replay(bad).replay
    assert report is not None
    first = report.divergences[0]
    assert first.what == "code" and first.step == "root step 2 (turn 2)"
    assert f"line {reply_line}" in first.why and "altered" in first.why
    assert report.replayed_answer == "forged" and report.recorded_answer == "42-XY"


def test_tampered_sub_call_reply_and_final_answer_are_found(tmp_path: Path) -> None:
    log = record(tmp_path)
    bad, _ = edit(
        log,
        lambda e: e["event"] == "model_called" and e["response"] == "42-XY",
        lambda e: e.update(response="99-ZZ"),
    )
    report = replay(bad).replay
    assert report is not None and report.divergences[0].what == "output"
    assert report.divergences[0].step == "root step 1 (turn 1)"
    bad, line = edit(
        log, lambda e: e["event"] == "run_finished", lambda e: e.update(answer="forged")
    )
    report = replay(bad).replay
    assert report is not None and [(d.what, d.position) for d in report.divergences] == [
        ("answer", line)
    ]


def test_a_recorded_provider_failure_replays_as_a_failure(tmp_path: Path) -> None:
    code = "```python\ntry:\n    llm_query('x')\nexcept Exception as e:\n    FINAL(str(e))\n```"
    root = ScriptedModel([code])
    log = tmp_path / "fail.jsonl"
    result = RLM(
        root.model, "polyrlm-scripted/no-such-model", log=log, retry_attempts=1
    ).completion("q", "c")
    assert "no-such-model" in str(result.answer)
    again = replay(log)
    assert again.replay is not None and again.replay.identical, again.replay.summary()


def test_credentials_never_reach_the_trajectory(tmp_path: Path) -> None:
    log = record(tmp_path, api_key="sk-secret-123", temperature=0.0)
    text = log.read_text()
    assert "sk-secret-123" not in text
    start = json.loads(text.splitlines()[0])
    assert start["settings"]["root_options"] == {"temperature": 0.0}
    assert replay(log).replay.identical  # type: ignore[union-attr]


@pytest.mark.no_replay("the test changes the context file after the run")
def test_a_file_context_is_referred_to_and_checked(tmp_path: Path) -> None:
    data = tmp_path / "ctx.txt"
    data.write_text(CONTEXT)
    root, sub = ScriptedModel([MAP, FINISH]), ScriptedModel(finder)
    log = tmp_path / "file.jsonl"
    RLM(root.model, sub.model, log=log).completion("What is the code?", data)
    assert CONTEXT not in log.read_text()  # referred to, not copied
    assert replay(log).replay.identical  # type: ignore[union-attr]
    data.write_text(CONTEXT.replace("42", "43"))
    with pytest.raises(ConfigError, match="changed since the run"):
        replay(log)


def test_a_large_context_needs_to_be_given_again(tmp_path: Path) -> None:
    big = "x" * (REPLAY_INLINE_CONTEXT_CHARS + 1)
    record_ = context_record(big)
    assert "value" not in record_
    with pytest.raises(ConfigError, match="pass the context"):
        context_from_record(record_)
    assert context_from_record(record_, big) is big
    with pytest.raises(ConfigError, match="not the recorded one"):
        context_from_record(record_, big + "y")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.text(), st.lists(st.text(), max_size=5), json_values))
def test_inline_contexts_round_trip_exactly(value: Any) -> None:
    record_ = context_record(value)
    assert json.loads(json.dumps(record_)) == record_  # fits a JSONL line
    if "value" in record_:
        back = context_from_record(json.loads(json.dumps(record_)))
        assert back == value and type(back) is type(value)


def test_a_dataframe_context_round_trips() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"], "c": [0.5, 1.5, float("nan")]})
    back = context_from_record(json.loads(json.dumps(context_record(frame))))
    assert back.equals(frame) and list(back.dtypes) == list(frame.dtypes)


def test_not_a_trajectory_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    assert main(["replay", str(junk)]) == 2
    assert "is not a trajectory" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2
    only_steps = tmp_path / "steps.jsonl"
    step = CodeExecuted(
        run_id="r",
        exec_id="r-e1",
        iteration=1,
        language="python",
        code="",
        output="",
        error=None,
        duration_s=0.0,
    )
    only_steps.write_text(step.model_dump_json() + "\n")
    assert main(["replay", str(only_steps)]) == 2
    assert "no root run_started" in capsys.readouterr().err


def test_fingerprints_of_large_values_see_both_ends() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a": range(10_000), "b": ["x"] * 10_000})
    changed = frame.copy()
    changed.loc[9_999, "a"] = -1
    assert fingerprint(frame) == fingerprint(frame.copy()) != fingerprint(changed)
    assert fingerprint(frame) != fingerprint(frame.head(9_999))
    items = [str(i) for i in range(5_000)]
    assert fingerprint(items) == fingerprint(list(items)) != fingerprint([*items[:-1], "z"])
    text = "a" * 5_000_000
    assert fingerprint(text) != fingerprint(text[:-1] + "b") != fingerprint(text + "a")
