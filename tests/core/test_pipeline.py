"""Pipelined turns (polyrlm.pipeline): where a block's parts fall, that they
run while the root still streams, and what happens when the rest does not
parse or the stream breaks."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyrlm import RLM
from polyrlm.errors import ConfigError
from polyrlm.events import CodeExecuted, ModelCalled
from polyrlm.pipeline import Pipeline, join_results
from polyrlm.records import ExecResult, Role
from polyrlm.statements import python_ready
from polyrlm.testing.fake_faults import Fault
from polyrlm.testing.fake_server import FakeOpenAIServer

PY_BLOCK = """\
a = llm_query("one")
print("a", a)
if a:
    b = llm_query("two")
else:
    b = ""
c = [llm_query(x)
     for x in ("three",)]
c
FINAL(a + b + c[0])"""
REPLY = f"Let me look.\n```python\n{PY_BLOCK}\n```\n"


def test_python_statements_are_ready_where_nothing_can_extend_them() -> None:
    assert python_ready("a = 1\n") == len("a = 1\n")  # a simple statement ends with its line
    assert python_ready("a = 1\nb = 2\n") == len("a = 1\nb = 2\n")
    assert python_ready("if a:\n    b = 1\n") == 0  # an if may get more lines, an else
    assert python_ready("if a:\n    b = 1\nelse:\n") == 0
    assert python_ready("x = 1\nif a:\n    b = 2\n") == len("x = 1\n")
    assert python_ready("if a:\n    b = 1\nc = 2\n") == len("if a:\n    b = 1\nc = 2\n")
    assert python_ready("for x in y:\n    f(x)\nz = (\n") == len("for x in y:\n    f(x)\n")
    assert python_ready("x = (1,\n") == 0 and python_ready("x = (1,\n2)\n") == len("x = (1,\n2)\n")
    assert python_ready('s = """\nz = 1\n') == 0  # inside a string
    assert python_ready("@dec\ndef f():\n    pass\n") == 0
    # Trailing expressions wait: one may be the block's last, whose value is shown.
    assert python_ready("a = 1\nlen(a)\nprint(a)\n") == len("a = 1\n")
    assert python_ready("a = 1; a\n") == 0  # the expression shares the line
    assert python_ready("# note\n") == 0


class Recorder:
    """A pipeline's runner that records each part and what it was told."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, int, int, bool]] = []

    async def __call__(self, code: str, first_line: int, part: int, last: bool) -> ExecResult:
        self.runs.append((code, first_line, part, last))
        await asyncio.sleep(0)
        return ExecResult(output=f"[{part}]")


async def _parts(pieces: list[str]) -> list[tuple[str, int, int, bool]]:
    recorder = Recorder()
    pipeline = Pipeline(("python",), python_ready, recorder)
    text = ""
    for piece in pieces:
        text += piece
        pipeline.feed(text)
        await asyncio.sleep(0)
    result, note = await pipeline.finish(PY_BLOCK)
    assert note == ""
    assert result.output == "".join(f"[{run[2]}]" for run in recorder.runs)
    return recorder.runs


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(REPLY) - 1), max_size=30))
def test_parts_depend_on_the_text_alone_not_on_the_stream(cuts: list[int]) -> None:
    """However the reply is chunked (or given whole, as a replay or a cache
    gives it), the block falls into the same parts."""
    edges = [0, *sorted(set(cuts)), len(REPLY)]
    pieces = [REPLY[a:b] for a, b in itertools.pairwise(edges)]
    assert asyncio.run(_parts(pieces)) == asyncio.run(_parts([]))


def test_parts_of_the_block() -> None:
    runs = asyncio.run(_parts([REPLY]))
    assert [(first, part, last) for _, first, part, last in runs] == [
        (1, 1, False),
        (2, 2, False),
        (7, 3, False),
        (9, 4, True),
    ]
    assert runs[0][0] == 'a = llm_query("one")\n'
    assert runs[1][0] == 'print("a", a)\nif a:\n    b = llm_query("two")\nelse:\n    b = ""\n'
    assert runs[3][0] == "c\nFINAL(a + b + c[0])"  # the bare `c` waited for the end
    assert "".join(code for code, *_ in runs) == PY_BLOCK


def test_join_results_keeps_the_last_error_and_answer() -> None:
    joined = join_results(
        [
            ExecResult(output="x\n", truncated_chars=2, duration_s=1.0),
            ExecResult(output="y\n", error="E", answer="A", answer_ready=True, duration_s=0.5),
        ]
    )
    assert joined.output == "x\ny\n" and joined.error == "E" and joined.answer == "A"
    assert joined.truncated_chars == 2 and joined.duration_s == 1.5 and joined.answer_ready


def _server(block: str, sub_latency_s: float = 0.0, **kwargs: Any) -> FakeOpenAIServer:
    def responder(body: dict[str, Any]) -> str:
        messages = body["messages"]
        if messages[0]["role"] == "system":  # the root
            turns = sum(m["role"] == "assistant" for m in messages)
            return block if turns == 0 else '```python\nFINAL("second turn")\n```'
        time.sleep(sub_latency_s)
        return str(messages[-1]["content"]).strip().upper()

    return FakeOpenAIServer(responder, **kwargs)


def _run(server: FakeOpenAIServer, **kwargs: Any) -> tuple[Any, list[Any]]:
    events: list[Any] = []
    rlm = RLM(
        "openai/root", "openai/sub", api_base=server.base_url, api_key="x",
        on_event=events.append, **kwargs,
    )  # fmt: skip
    return rlm.completion("q", "ctx"), events


def test_parts_run_while_the_root_still_streams() -> None:
    """The first part's sub-call is answered before the root's reply has
    ended: its CodeExecuted comes before the root's ModelCalled."""
    with _server(REPLY, stream_delay_s=0.01) as server:
        result, events = _run(server, backend="python-inline", pipeline=True)
    assert result.answer == "ONETWOTHREE"
    kinds = [
        ("root" if e.role == Role.ROOT else "sub") if isinstance(e, ModelCalled) else e.part
        for e in events
        if isinstance(e, ModelCalled | CodeExecuted)
    ]
    assert kinds.index(1) < kinds.index("root")  # part 1 ran before the reply ended
    assert kinds[: kinds.index("root")].count("sub") >= 1
    parts = [e for e in events if isinstance(e, CodeExecuted)]
    assert [p.part for p in parts] == [1, 2, 3, 4]
    assert [p.first_line for p in parts] == [1, 2, 7, 9]


def test_off_the_block_runs_whole() -> None:
    with _server(REPLY, stream_delay_s=0.001) as server:
        result, events = _run(server, backend="python-inline", pipeline=False)
    parts = [e for e in events if isinstance(e, CodeExecuted)]
    assert result.answer == "ONETWOTHREE"
    assert [(p.part, p.first_line, p.code) for p in parts] == [(None, 1, PY_BLOCK)]


def test_a_syntax_error_later_leaves_the_earlier_parts_run_and_says_so() -> None:
    block = '```python\nx = llm_query("kept")\ny = 2\nz = (\n```'
    with _server(block, stream_delay_s=0.001) as server:
        result, events = _run(server, backend="python-inline", pipeline=True)
        observation = server.calls[-1].messages[-1]["content"]
    parts = [e for e in events if isinstance(e, CodeExecuted)]
    assert [p.part for p in parts] == [1, 2, 3, None]  # the last: the second turn's block
    assert parts[0].error is None and parts[1].error is None
    assert "SyntaxError" in str(parts[2].error) and parts[2].first_line == 3
    assert "Lines 1-2 of this block had already run" in observation
    assert "from line 3 on" in observation
    assert result.answer == "second turn"


def test_errors_in_a_part_stop_the_rest_as_in_a_whole_block() -> None:
    block = '```python\nx = 1\nraise ValueError("boom")\ny = llm_query("never")\nFINAL(y)\n```'
    with _server(block, stream_delay_s=0.001) as server:
        result, events = _run(server, backend="python-inline", pipeline=True)
        subs = [c for c in server.calls if c.messages[0]["role"] != "system"]
    parts = [e for e in events if isinstance(e, CodeExecuted)]
    assert not subs  # the statement after the error never ran
    assert "ValueError: boom" in str(parts[1].error)
    assert "line 2" in str(parts[1].error)  # the block's own line number
    assert result.answer == "second turn"


def test_a_broken_stream_asked_again_runs_no_more_of_the_first_attempt() -> None:
    """The first attempt stalls after a few lines, when its first part has
    run; the broker asks again; nothing more of the first attempt runs, and
    the new reply's block runs whole (its first part included, again)."""
    with _server(REPLY, faults=[Fault("stall_stream", after_events=9)]) as server:
        result, events = _run(
            server, backend="python-inline", pipeline=True, call_timeout_s=1.5,
            retry_initial_wait_s=0.01,
        )  # fmt: skip
        asked = [str(c.messages[-1]["content"]) for c in server.calls]
    parts = [e for e in events if isinstance(e, CodeExecuted)]
    assert result.answer == "ONETWOTHREE"
    assert [(p.part, p.first_line) for p in parts] == [(1, 1), (2, 1)]
    assert parts[0].code == 'a = llm_query("one")\n' and parts[1].code == PY_BLOCK
    assert asked.count("one") == 2  # once in the first attempt's part, once in the block


@pytest.mark.parametrize("backend", ["sql", "bash"])
def test_sql_and_bash_blocks_give_what_they_give_whole(backend: str) -> None:
    blocks = {
        "sql": "```sql\nCREATE TABLE t AS SELECT llm('one') AS v;\nSELECT 41;\n"
        "SELECT final((SELECT v FROM t));\n```",
        "bash": '```bash\na=$(llm --no-input "one")\nfalse\necho "status $?"\n'
        'f() { echo "in f $1"; }\nf x\nfinal "$a"\n```',
    }
    outcomes = []
    for pipeline in (False, True):
        with _server(blocks[backend], stream_delay_s=0.002) as server:
            result, events = _run(server, backend=backend, pipeline=pipeline)
        parts = [e for e in events if isinstance(e, CodeExecuted)]
        outcomes.append((result.answer, "".join(p.output for p in parts), parts[-1].error))
        if pipeline:
            assert len(parts) > 1
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == "ONE"


def test_bash_is_pipelined_by_default_and_python_is_not() -> None:
    from polyrlm.registry import get_registry

    assert get_registry().get("bash").pipelines_exactly
    assert not get_registry().get("python-inline").pipelines_exactly
    assert not get_registry().get("sql").pipelines_exactly


def _peak_sub_calls(by_depth: dict[int, int] | None) -> int:
    """Most sub-calls of a block's 8 in flight at once (each takes 0.3 s)."""
    block = '```python\nout = llm_batch([f"p{i}" for i in range(8)])\nFINAL(len(out))\n```'
    arrivals: list[float] = []

    def respond(body: dict[str, Any]) -> str:
        return block if body["messages"][0]["role"] == "system" else "ok"

    def latency(body: dict[str, Any]) -> float:
        if body["messages"][0]["role"] == "system":
            return 0.0
        arrivals.append(time.monotonic())
        return 0.3

    with FakeOpenAIServer(respond, latency_for=latency) as server:
        result, _ = _run(
            server, backend="python-inline", max_concurrency=16,
            max_concurrency_by_depth=by_depth,
        )  # fmt: skip
    assert result.answer == 8 and len(arrivals) == 8
    # In flight at the middle of each call: the calls that arrived less than 0.3 s before.
    return max(sum(b <= a + 0.15 < b + 0.3 for b in arrivals) for a in arrivals)


def test_concurrency_per_depth_bounds_the_sub_calls() -> None:
    """max_concurrency_by_depth={1: 2}: at most 2 of the block's 8 sub-calls
    (depth 1) are in flight at once, within the tree's max_concurrency of 16."""
    assert _peak_sub_calls({1: 2}) == 2
    assert _peak_sub_calls({0: 1}) == 8  # the root's depth only
    with pytest.raises(ConfigError, match="max_concurrency_by_depth"):
        RLM("openai/x", max_concurrency_by_depth={1: 0})


@pytest.mark.parametrize("backend", ["python-inline", "bash"])
def test_the_last_block_sent_again_is_not_run_even_pipelined(backend: str) -> None:
    """A small model's loop: the same block twice in a row runs once (its
    parts are held while it streams); after another block it runs again."""
    python = backend == "python-inline"
    again = (
        "```python\nn = llm_query('one')\nprint(n)\n```"
        if python
        else ('```bash\nn=$(llm --no-input "one")\necho "$n"\n```')
    )
    other = "```python\nprint('other')\n```" if python else "```bash\necho other\n```"
    done = '```python\nFINAL("done")\n```' if python else "```bash\nfinal done\n```"
    script = [again, again, other, again, done]

    def responder(body: dict[str, Any]) -> str:
        messages = body["messages"]
        if messages[0]["role"] == "system":
            return script[sum(m["role"] == "assistant" for m in messages)]
        return "ONE"

    with FakeOpenAIServer(responder, stream_delay_s=0.002) as server:
        result, events = _run(server, backend=backend, pipeline=True)
    assert result.answer == "done"
    ran = [e.iteration for e in events if isinstance(e, CodeExecuted)]
    assert sorted(set(ran)) == [1, 3, 4, 5]  # turn 2 repeated turn 1: not run at all
    subs = [e for e in events if isinstance(e, ModelCalled) and e.role is Role.SUB]
    assert len(subs) == 2
    root_prompts = [e for e in events if isinstance(e, ModelCalled) and e.role is Role.ROOT]
    assert len(root_prompts) == 5
