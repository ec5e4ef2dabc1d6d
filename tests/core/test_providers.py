"""Real model names through litellm's real provider code: parameters from
litellm's map, replies cut after their code block, clear and fast errors."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

import pytest

from polyrlm import RLM, StopReason
from polyrlm.cli import main
from polyrlm.events import ModelCalled
from polyrlm.provider import litellm_module
from polyrlm.records import Role
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.testing.scripted import STREAM_CHUNK_CHARS, ScriptedModel

BLOCK = "```python\nx = 41 + 1\nprint(x)\n```"
#: What a model invents after its block: the block's output and an answer on top.
INVENTED = "\nOutput:\n```text\n42\n```\nSo the answer is 42. " + "More words. " * 200


def test_a_reply_going_on_after_its_block_is_cut_where_the_model_has_no_stop() -> None:
    root = ScriptedModel([BLOCK + INVENTED, "```python\nFINAL(x)\n```"])
    result = RLM(root.model).completion("q", "c")
    assert (result.answer, result.stop_reason) == (42, StopReason.ANSWERED)
    taken, pieces = root.streams[0]
    assert taken < pieces / 10  # the client stopped reading at the block's end
    first = next(e for e in result.trajectory if isinstance(e, ModelCalled))
    assert first.response == BLOCK  # nothing after the block reached the loop
    kept = litellm_module().token_counter(model=root.model, text=BLOCK)
    assert first.completion_tokens == kept  # the cut-off text is not counted as generated
    assert result.usage.by_role[Role.ROOT].completion_tokens < 60


def test_the_cut_holds_when_the_fence_and_its_line_end_arrive_apart() -> None:
    block = "```python\nFINAL(1)\n```"
    prose = "x" * (-(len(block) + 1) % STREAM_CHUNK_CHARS) + "\n"  # the fence ends a piece
    root = ScriptedModel([prose + block + "\nIt printed 1, so FINAL is 1. " + "More. " * 200])
    result = RLM(root.model).completion("q", "c")
    assert result.answer == 1
    taken, pieces = root.streams[0]
    assert taken < pieces / 10
    first = next(e for e in result.trajectory if isinstance(e, ModelCalled))
    assert first.response == prose + block


def test_a_missing_key_fails_at_once_and_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    started = time.perf_counter()
    result = RLM("openai/gpt-5-mini").completion("q", "c")
    assert time.perf_counter() - started < 2
    assert result.stop_reason == StopReason.ERROR and result.error is not None
    assert "OPENAI_API_KEY" in result.error and "api_key" in result.error
    calls = [e for e in result.trajectory if isinstance(e, ModelCalled)]
    assert len(calls) == 1 and calls[0].error is not None and result.usage.total.calls == 0


def test_the_cli_names_the_missing_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    argv = ["run", "q", "-m", "anthropic/claude-haiku-4-5", "--max-iterations", "1"]
    assert main(argv) == 1
    assert "ANTHROPIC_API_KEY" in capsys.readouterr().err


def test_the_readme_python_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The "Use it" snippet of the README, verbatim, against the fake server
    standing in for OpenAI (litellm's real OpenAI provider code in between)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Use it") :]
    snippet = section[section.index("```python\n") + 10 : section.index("\n```\n")]
    assert 'model="openai/gpt-5-mini"' in snippet and "tickets.txt" in snippet
    (tmp_path / "tickets.txt").write_text(
        "1 my parcel is late\n2 I want a refund\n3 refund please\n4 thanks\n5 refund now\n"
    )
    code = "```python\nFINAL(sum('refund' in line for line in context.splitlines()))\n```"
    with FakeOpenAIServer(lambda body: code + "\nThat makes 3.") as server:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("OPENAI_API_BASE", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        exec(compile(snippet, "README.md", "exec"), {"__name__": "__readme__"})
        (call,) = server.calls
    assert capsys.readouterr().out.splitlines()[0] == "3 answered"
    assert call.model == "gpt-5-mini" and "stop" not in call.body


def _run(model: str, server: FakeOpenAIServer, **options: object) -> Any:
    base = server.anthropic_base_url if model.startswith("anthropic/") else server.base_url
    return RLM(model, model, api_base=base, api_key="sk-test", **options).completion("q", "ctx")


FINISH = "```python\nFINAL(len(context))\n```"


def test_parameters_follow_litellm_s_map() -> None:
    with FakeOpenAIServer(lambda body: FINISH) as server:
        assert _run("openai/o3", server, max_tokens=300).answer == 3
        assert _run("openai/gpt-5-mini", server, reasoning_effort="low").answer == 3
        o3, gpt5 = (call.body for call in server.calls)
    # litellm renames max_tokens for reasoning models; o3 takes stop, GPT-5 does not
    assert o3["max_completion_tokens"] == 300 and "max_tokens" not in o3 and o3["stop"]
    assert gpt5["reasoning_effort"] == "low" and "stop" not in gpt5


def test_a_parameter_the_model_rejects_fails_at_once_by_name() -> None:
    with FakeOpenAIServer(lambda body: FINISH) as server:
        started = time.perf_counter()
        result = _run("openai/gpt-5-mini", server, temperature=0.2)
        assert server.calls == []  # refused before sending
    assert time.perf_counter() - started < 2 and result.stop_reason == StopReason.ERROR
    assert "temperature" in (result.error or "")


def test_a_wrong_key_is_not_retried_and_says_which_variable() -> None:
    with FakeOpenAIServer(lambda body: FINISH, fail_first=10, fail_status=401) as server:
        started = time.perf_counter()
        result = _run("openai/gpt-4o", server)
        assert len(server.calls) == 1
    assert time.perf_counter() - started < 2 and "OPENAI_API_KEY" in (result.error or "")


def test_xml_tool_calls_in_prose_run_and_the_model_is_told() -> None:
    xml = (
        'I will count.\n<function_calls><invoke name="run_code">'
        '<parameter name="code">n = len(context)\nprint(n)</parameter></invoke></function_calls>'
    )
    root = ScriptedModel([xml, "```python\nFINAL(n)\n```"])
    result = RLM(root.model).completion("q", "abcd")
    assert result.answer == 4
    observation = root.calls[1][-1]["content"]
    assert "XML-style tool call" in observation and "4" in observation


def test_cached_prompt_tokens_are_counted_for_anthropic_and_openai() -> None:
    turns = ["```python\nx = len(context)\n```", FINISH]

    def reply(body: dict[str, Any]) -> str:
        return turns[sum(m["role"] == "assistant" for m in body["messages"])]

    for model in ("anthropic/claude-haiku-4-5", "openai/gpt-4o"):
        with FakeOpenAIServer(reply) as server:
            result = _run(model, server, code_channel="fences")
            served = server.calls
        assert result.answer == 3
        if model.startswith("anthropic/"):  # the system prompt and newest message carry marks
            system = served[0].body["system"]
            assert system[-1]["cache_control"] == {"type": "ephemeral"}
        cached = sum(call.cached_tokens for call in served)
        assert cached > 0 and result.usage.total.cached_prompt_tokens == cached


def test_runs_leave_no_socket_open() -> None:
    # litellm caches an HTTP client per event loop, and each completion() has
    # a loop of its own: its clients are closed when it ends, or every run
    # would leave sockets open until the garbage collector finds them.
    def reply(view: dict[str, Any]) -> str:
        root = view["messages"][0]["role"] == "system"
        return "```python\nFINAL(llm_query('x'))\n```" if root else "pong"

    with FakeOpenAIServer(reply) as server:
        rlm = RLM("openai/gpt-4o-mini", api_base=server.base_url, api_key="k")
        rlm.completion("q", "c")  # the first run imports and opens what stays open
        gc.collect()
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            assert rlm.completion("q", "c").answer == "pong"
        gc.collect()  # an unclosed socket would raise ResourceWarning here (an error)
        assert len(os.listdir("/proc/self/fd")) <= before
