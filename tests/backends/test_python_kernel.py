"""The Jupyter-kernel backend: isolation, crashes, limits, no leaks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyrlm import RLM, StopReason
from polyrlm.backends.python.kernel import KernelPythonEnvironment
from polyrlm.testing.contract import EchoSubCalls
from polyrlm.testing.scripted import ScriptedModel
from tests.core.test_loop import FINISH, NEEDLE, PARTITION, haystack, needle_finder


@pytest.fixture
def env() -> Iterator[KernelPythonEnvironment]:
    environment = KernelPythonEnvironment(EchoSubCalls())
    environment.load_context({"doc": "some text", "n": [1, 2, 3]})
    yield environment
    environment.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}/status").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text()
    )


@pytest.mark.parametrize(
    "killer",
    ["import os; os._exit(1)", "import ctypes; ctypes.string_at(0)"],
    ids=["os._exit", "segfault"],
)
def test_dead_kernel_is_restarted_with_the_context(
    env: KernelPythonEnvironment, killer: str
) -> None:
    env.execute("x = 41")
    old_pid = env.km.provisioner.pid
    result = env.execute(killer)
    assert result.restarted and result.error is not None
    assert "died" in result.error and "every variable is lost" in result.error
    assert not _alive(old_pid)
    again = env.execute("print(doc, n, 'x' in globals())")
    assert again.error is None and again.output.strip() == "some text [1, 2, 3] False"


def test_memory_exhaustion_is_contained() -> None:
    config = KernelPythonEnvironment.Config(memory_limit_bytes=1024**3)
    with KernelPythonEnvironment(EchoSubCalls(), config) as env:
        env.load_context("c")
        env.execute("x = 1")
        result = env.execute("big = bytearray(4 * 1024**3)")
        assert result.error is not None and "MemoryError" in result.error
        after = env.execute("print(x + 1)")
        assert after.output.strip() == "2"


def test_host_secrets_are_not_in_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-secret-123")
    monkeypatch.setenv("MY_TOKEN", "tok-fake-456")
    with KernelPythonEnvironment(EchoSubCalls()) as env:
        env.load_context("")
        out = env.execute(
            "import os\nprint(sorted(os.environ))\n"
            "print(any('fake' in v for v in os.environ.values()))"
        ).output
    assert "OPENAI_API_KEY" not in out and "MY_TOKEN" not in out
    assert out.strip().endswith("False")


def test_nothing_leaks_after_close() -> None:
    env = KernelPythonEnvironment(EchoSubCalls())
    env.load_context("abc")
    pid = env.km.provisioner.pid
    env.execute("import os; os._exit(3)")  # a restart on the way
    pid2 = env.km.provisioner.pid
    workdir, bridge_dir = env.workdir, env.bridge.directory
    assert workdir.exists() and (bridge_dir / "bridge.sock").exists()
    env.close()
    env.close()
    assert not _alive(pid) and not _alive(pid2)
    assert not workdir.exists() and not bridge_dir.exists()


def test_output_flood_is_capped_in_the_kernel(env: KernelPythonEnvironment) -> None:
    result = env.execute("for _ in range(100_000):\n    print('y' * 100)")
    assert len(result.output) <= env.config.capture_limit_chars
    assert result.truncated_chars == 100_000 * 101 - len(result.output)


def test_needle_run_on_the_kernel_backend() -> None:
    root = ScriptedModel([PARTITION, FINISH])
    sub = ScriptedModel(needle_finder)
    result = RLM(root.model, sub.model, backend="python").completion("code?", haystack())
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "7714-ALPHA"
    assert all(NEEDLE not in m["content"] for call in root.calls for m in call)


def test_child_rlm_through_the_bridge() -> None:
    def script(messages: list[dict[str, str]]) -> str:
        turns = sum(m["role"] == "assistant" for m in messages)
        if "child" in messages[1]["content"]:
            return "```python\nFINAL(context.upper())\n```"
        if turns == 0:
            return "```python\nr = rlm_batch(['child a', 'child b'], ['x', 'y'])\nprint(r)\n```"
        return "```python\nFINAL(r)\n```"

    root = ScriptedModel(script)
    result = RLM(root.model, backend="python", max_depth=2).completion("q", "ctx")
    assert result.answer == ["X", "Y"]
    assert set(result.usage.by_depth) == {0, 1}


def test_answer_text_comes_back_exactly(env: KernelPythonEnvironment) -> None:
    text = 'two\nlines, "quotes", a \\ backslash, \t tab, é and \U0001f600'
    result = env.execute(f"answer['content'] = {text!r}\nanswer['ready'] = True")
    assert result.error is None and result.answer_ready
    assert result.answer == text
