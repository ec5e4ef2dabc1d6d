"""The Jupyter-kernel backend's user tools and typed sub-calls: the tools run
in the host process, reach the kernel over the bridge, and come back with
every fresh namespace (a restart after a crash or a stuck block)."""

from __future__ import annotations

import ast
import inspect
import os
from collections.abc import Iterator

import pytest

from polyrlm.answers import AnswerType
from polyrlm.backends.python.kernel import KernelPythonEnvironment
from polyrlm.testing.contract import EchoSubCalls


def host_pid() -> int:
    """The pid of the process the tool runs in."""
    return os.getpid()


def area(width: int, height: int) -> int:
    """Area of a rectangle: "width" * 'height' (quotes kept), in m².

    A second line."""
    return width * height


@pytest.fixture
def env() -> Iterator[KernelPythonEnvironment]:
    environment = KernelPythonEnvironment(EchoSubCalls(tools=[host_pid, area]))
    environment.load_context("some text")
    yield environment
    environment.close()


@pytest.mark.parametrize("sandbox", [None, False], ids=["default", "unsandboxed"])
def test_tools_run_on_the_host_and_come_back_after_a_restart(sandbox: bool | None) -> None:
    config = KernelPythonEnvironment.Config(sandbox=sandbox)
    with KernelPythonEnvironment(EchoSubCalls(tools=[host_pid, area]), config) as env:
        env.load_context("")
        first = env.execute("import os\nFINAL([host_pid(), os.getpid()])")
        assert first.error is None and first.answer_ready
        assert first.answer is not None and first.answer[0] == os.getpid() != first.answer[1]
        died = env.execute("import os; os._exit(1)")
        assert died.restarted
        again = env.execute("print(host_pid(), area(2, height=3))")
        assert again.error is None and again.output.split() == [str(os.getpid()), "6"]
        subcalls = env.subcalls
        assert isinstance(subcalls, EchoSubCalls)
        assert [name for name, _ in subcalls.tool_calls] == ["host_pid", "host_pid", "area"]


def test_tools_come_back_after_a_block_that_ignored_its_interrupt() -> None:
    config = KernelPythonEnvironment.Config(exec_timeout_s=1.0, interrupt_grace_s=1.0)
    with KernelPythonEnvironment(EchoSubCalls(tools=[area]), config) as env:
        env.load_context("")
        stuck = env.execute(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
        )
        assert stuck.restarted and stuck.timed_out
        after = env.execute("print(area(4, 5))")
        assert after.error is None and after.output.strip() == "20"


def test_a_failed_tool_call_names_the_tool_and_the_argument(
    env: KernelPythonEnvironment,
) -> None:
    result = env.execute("x = 1\narea('wide', 7)")
    assert result.error is not None and not result.restarted
    assert "SubCallError" in result.error and "area" in result.error
    assert "width" in result.error and "integer" in result.error
    assert "_polyrlm" not in result.error  # no plumbing frames in the traceback
    too_many = env.execute("area(1, 2, 3)")
    assert too_many.error is not None and "area() takes 2 arguments, 3 given" in too_many.error
    caught = env.execute(
        "try:\n    area(height=2)\nexcept SubCallError as exc:\n    print('caught', exc)"
    )
    assert caught.error is None and "caught" in caught.output and "width" in caught.output
    assert env.execute("print(x + 1)").output.strip() == "2"  # the kernel lived on


def test_a_tool_result_feeds_further_code(env: KernelPythonEnvironment) -> None:
    result = env.execute(
        "side = area(3, 4)\nrows = [area(side, k) for k in range(1, 4)]\nFINAL(sum(rows) + side)"
    )
    assert result.error is None and result.answer == 12 * 6 + 12


def test_tools_are_described_but_not_listed_as_variables(env: KernelPythonEnvironment) -> None:
    doc = env.execute("print(area.__name__, repr(area.__doc__))")
    name, text = doc.output.strip().split(" ", 1)
    assert name == "area" and ast.literal_eval(text) == inspect.cleandoc(area.__doc__ or "")
    names = [v.name for v in env.read_state().variables]
    assert "area" not in names and "host_pid" not in names and "context" in names
    guide = env.tools_guide(env.subcalls.tools)
    assert "def area(width: int, height: int) -> int:" in guide
    assert "def host_pid() -> int:" in guide


def test_typed_sub_calls_in_the_kernel(env: KernelPythonEnvironment) -> None:
    result = env.execute(
        "from pydantic import BaseModel\n"
        "class Echo(BaseModel):\n"
        "    echo: str\n"
        "one = llm_query('a', schema=Echo)\n"
        "many = llm_batch(['b', 'c'], schema={'type': 'object'})\n"
        "print(type(one).__name__, one.echo, [m['echo'] for m in many])\n"
        "answer.update(content=one, ready=True)"
    )
    assert result.error is None
    assert result.output.strip() == "Echo re:a ['re:b', 're:c']"
    assert result.answer == {"echo": "re:a"}  # a pydantic answer comes back as its fields


def test_the_answer_guide_is_python(env: KernelPythonEnvironment) -> None:
    guide = env.answer_guide(AnswerType(list[int]))
    assert "```python" in guide and "list[int]" in guide
