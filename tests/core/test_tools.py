"""User tools: made from functions, checked on the host, recorded, replayed."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path

import pytest
from pydantic import BaseModel

from polyrlm import RLM, StopReason, Tool, ToolError, tool
from polyrlm.errors import ConfigError
from polyrlm.events import ToolCalled
from polyrlm.replay import replay
from polyrlm.testing.scripted import ScriptedModel
from polyrlm.tool_calls import ToolRunner
from polyrlm.tools import TOOL_ARGUMENTS_MAX_BYTES, TOOL_RESULT_MAX_BYTES, as_tools


class Box(BaseModel):
    w: int
    h: int


def scale(box: Box, times: float = 2.0) -> Box:
    """Scale a box."""
    return Box(w=int(box.w * times), h=int(box.h * times))


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def test_a_tool_is_described_from_its_hints_and_docstring() -> None:
    t = tool(scale)
    assert t.params == ["box", "times"] and t.required == ["box"]
    text = t.describe()
    assert "class Box(TypedDict):" in text
    assert "def scale(box: Box, times: float = 2.0) -> Box:" in text and "Scale a box." in text
    assert Tool.from_record(t.record()).describe() == text  # a replay shows the same


def test_arguments_and_results_are_validated() -> None:
    t = tool(scale)
    kwargs = t.arguments({"box": {"w": 2, "h": "3"}})
    assert kwargs == {"box": Box(w=2, h=3)}
    assert t.result(scale(**kwargs)) == {"w": 4, "h": 6}
    with pytest.raises(ToolError, match=r"scale: bad arguments: box\.w"):
        t.arguments({"box": {"w": "x", "h": 1}})
    with pytest.raises(ToolError, match="Extra inputs"):
        t.arguments({"box": {"w": 1, "h": 1}, "colour": "red"})
    with pytest.raises(ToolError, match="returned a value its hint refuses"):
        t.result("not a box")


def test_sizes_are_capped() -> None:
    def echo(text: str) -> str:
        return text * 3

    t = tool(echo)
    with pytest.raises(ToolError, match=f"over {TOOL_ARGUMENTS_MAX_BYTES} bytes"):
        t.arguments({"text": "x" * TOOL_ARGUMENTS_MAX_BYTES})
    with pytest.raises(ToolError, match=f"over {TOOL_RESULT_MAX_BYTES} bytes"):
        t.result("x" * TOOL_RESULT_MAX_BYTES)


def test_bad_tools_are_refused_when_made() -> None:
    def varargs(*items: int) -> int:
        return 0

    with pytest.raises(ConfigError, match="plain named argument"):
        tool(varargs)
    with pytest.raises(ConfigError, match="taken by the environments"):
        tool(lambda x: x, name="llm_query")
    with pytest.raises(ConfigError, match="not an identifier"):
        tool(lambda x: x, name="two words")
    with pytest.raises(ConfigError, match="scope"):
        tool(scale, scope="everywhere")
    with pytest.raises(ConfigError, match="two tools are named"):
        as_tools([scale, tool(scale)])


def test_the_decorator_forms() -> None:
    @tool
    def a(x: int) -> int:
        return x

    @tool(name="bee", scope="tree")
    def b(x: int) -> int:
        return x

    assert (a.name, a.scope) == ("a", "root") and (b.name, b.scope) == ("bee", "tree")


def run_runner(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


def test_the_runner_records_each_call_and_runs_on_the_host() -> None:
    events: list[ToolCalled] = []
    where: list[tuple[int, int]] = []

    def locate(n: int) -> int:
        where.append((os.getpid(), threading.get_ident()))
        return n + 1

    async def slow(n: int) -> int:
        await asyncio.sleep(0)
        return n * 10

    runner = ToolRunner(as_tools([locate, tool(slow, scope="tree")]), events.append)  # type: ignore[arg-type]

    async def main() -> tuple[object, object]:
        one = await runner.call("locate", {"n": 1}, depth=0, run_id="r", exec_id="e1")
        many = await runner.batch("slow", [{"n": 1}, {"n": 2}], depth=0, run_id="r", exec_id="e1")
        return one, many

    one, many = run_runner(main)
    assert one == 2 and many == [10, 20]
    assert where[0][0] == os.getpid() and where[0][1] != threading.get_ident()
    assert [(e.tool, e.arguments, e.result) for e in events] == [
        ("locate", {"n": 1}, 2),
        ("slow", {"n": 1}, 10),
        ("slow", {"n": 2}, 20),
    ]
    assert [t.name for t in runner.offered(1)] == ["slow"]  # the root's own tool is not a child's


def test_the_runner_reports_failures_as_tool_errors() -> None:
    events: list[ToolCalled] = []

    def boom(n: int) -> int:
        raise RuntimeError(f"no {n}")

    runner = ToolRunner(as_tools([boom]), events.append)  # type: ignore[arg-type]

    async def call(name: str, args: object, depth: int = 0) -> object:
        return await runner.call(name, args, depth=depth, run_id="r", exec_id=None)

    with pytest.raises(ToolError, match="boom raised RuntimeError: no 3"):
        asyncio.run(call("boom", {"n": 3}))
    with pytest.raises(ToolError, match=r"no tool named 'nope'.*tools: boom"):
        asyncio.run(call("nope", {}))
    with pytest.raises(ToolError, match=r"no tool named 'boom'.*tools: none"):
        asyncio.run(call("boom", {"n": 1}, depth=1))
    with pytest.raises(ToolError, match="call 1 of 2: boom: bad arguments"):
        asyncio.run(runner.batch("boom", [{"n": "x"}, {"n": 1}], depth=0, run_id="r", exec_id=None))
    assert events[0].error == "boom raised RuntimeError: no 3" and events[0].result is None


def test_a_run_uses_a_tool_and_a_replay_serves_it_without_the_function(tmp_path: Path) -> None:
    calls: list[int] = []

    def lookup(city: str) -> dict[str, float]:
        """Temperatures by city."""
        calls.append(1)
        return {"temp": 21.5 if city == "Paris" else 0.0}

    code = "t = lookup('Paris')['temp']\nFINAL(f'{t} C')"
    root = ScriptedModel([fenced(code)])
    log = tmp_path / "tools.jsonl"
    result = RLM(root.model, tools=[lookup], log=log).completion("How warm?", "text")
    assert result.answer == "21.5 C" and calls == [1]
    assert "def lookup(city: str) -> dict[str, float]:" in root.calls[0][0]["content"]
    again = replay(log)
    assert again.replay is not None and again.replay.identical and again.answer == "21.5 C"
    assert calls == [1]  # served from the record
    # A tool call the record does not have is a divergence, and the code's error.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    for line in lines:
        if line["event"] == "tool_called":
            line["arguments_digest"] = "0" * 64
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("".join(json.dumps(line) + "\n" for line in lines))
    changed = replay(tampered)
    assert changed.replay is not None and not changed.replay.identical
    assert any(d.step == "tool call" for d in changed.replay.divergences)
    assert calls == [1]


def test_a_failing_tool_is_the_codes_error_and_the_run_goes_on() -> None:
    def need_positive(n: int) -> int:
        if n <= 0:
            raise ValueError("n must be positive")
        return n

    root = ScriptedModel(
        [
            fenced("need_positive(-1)"),
            fenced(
                "try:\n    need_positive('x')\nexcept SubCallError as e:\n    print('caught', e)"
            ),
            fenced("FINAL(need_positive(5))"),
        ]
    )
    result = RLM(root.model, tools=[need_positive]).completion("q", "c")
    assert result.stop_reason == StopReason.ANSWERED and result.answer == 5
    assert "need_positive raised ValueError: n must be positive" in root.calls[1][-1]["content"]
    assert "caught need_positive: bad arguments: n" in root.calls[2][-1]["content"]


def test_scope_tree_reaches_child_runs() -> None:
    def root_only(n: int) -> int:
        return n

    def shared(n: int) -> int:
        return n * 2

    child = fenced("FINAL(str(shared(4)) + ' ' + str('root_only' in dir()))")
    parent = fenced("FINAL(rlm_query('child task', 'ctx'))")
    root = ScriptedModel(lambda m: child if "child task" in m[1]["content"] else parent)
    rlm = RLM(root.model, max_depth=2, tools=[root_only, tool(shared, scope="tree")])
    result = rlm.completion("q", "c")
    assert result.answer == "8 False"
