"""Real model names through litellm's real provider code: parameters from
litellm's map, replies cut after their code block, clear and fast errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from polyrlm import RLM, StopReason
from polyrlm.cli import main
from polyrlm.events import ModelCalled
from polyrlm.provider import litellm_module
from polyrlm.records import Role
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.testing.scripted import ScriptedModel

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
