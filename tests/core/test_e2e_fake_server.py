"""The needle run through litellm and a real HTTP server (the fake one)."""

from __future__ import annotations

from typing import Any

import pytest

from polyrlm import RLM, StopReason
from polyrlm.records import Role
from polyrlm.testing.fake_server import FakeOpenAIServer
from tests.core.test_loop import FINISH, NEEDLE, PARTITION, haystack


def responder(body: dict[str, Any]) -> str:
    messages = body["messages"]
    if body["model"] == "root":
        turns = sum(m["role"] == "assistant" for m in messages)
        return [PARTITION, FINISH][turns]
    return "7714-ALPHA" if "7714-ALPHA" in messages[-1]["content"] else "NONE"


def test_needle_run_through_litellm_and_http(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer(responder) as server:
        monkeypatch.setenv("OPENAI_API_BASE", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        rlm = RLM("openai/root", "openai/sub", max_concurrency=4)
        result = rlm.completion("What is the launch code?", haystack())
        served = server.calls
    assert result.stop_reason == StopReason.ANSWERED
    assert result.answer == "7714-ALPHA"
    root_calls = [c for c in served if c.model == "root"]
    sub_calls = [c for c in served if c.model == "sub"]
    assert len(root_calls) == 2 and len(sub_calls) == 10
    for call in root_calls:
        assert all(NEEDLE not in str(m["content"]) for m in call.messages)
    usage = result.usage.by_role
    # the tokens are the ones the server reported, call for call
    assert usage[Role.ROOT].prompt_tokens == sum(c.prompt_tokens for c in root_calls)
    assert usage[Role.ROOT].completion_tokens == sum(c.completion_tokens for c in root_calls)
    assert usage[Role.SUB].prompt_tokens == sum(c.prompt_tokens for c in sub_calls)
    assert usage[Role.SUB].completion_tokens == sum(c.completion_tokens for c in sub_calls)
    assert result.usage.total.unpriced_calls == 12 and result.usage.total.cost_usd == 0


def test_rate_limits_are_retried_through_http(monkeypatch: pytest.MonkeyPatch) -> None:
    reply = "```python\nFINAL(llm_query('hi'))\n```"
    with FakeOpenAIServer(
        lambda body: reply if body["model"] == "root" else "hello", fail_first=2, fail_status=429
    ) as server:
        rlm = RLM(
            "openai/root",
            "openai/sub",
            api_base=server.base_url,
            api_key="x",
            retry_initial_wait_s=0.01,
        )
        result = rlm.completion("q", "c")
        statuses = [c.status for c in server.calls]
    assert result.answer == "hello"
    assert statuses == [429, 429, 200, 200]


def test_provider_failure_stops_the_run_with_a_clear_error() -> None:
    with FakeOpenAIServer(fail_first=100, fail_status=500) as server:
        rlm = RLM(
            "openai/root",
            api_base=server.base_url,
            api_key="x",
            retry_attempts=2,
            retry_initial_wait_s=0.01,
        )
        result = rlm.completion("q", "c")
    assert result.stop_reason == StopReason.ERROR
    assert result.error and "openai/root" in result.error and "InternalServerError" in result.error
    assert result.usage.total.failed_calls == 1
