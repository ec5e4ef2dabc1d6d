"""The fake server's simulated prompt caching (OpenAI automatic, Anthropic ``cache_control``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polyrlm.testing.fake_server import OPENAI_CACHE_MIN_TOKENS, FakeOpenAIServer

EPHEMERAL = {"type": "ephemeral"}


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(lambda body: "fine") as srv:
        yield srv


def words(n: int, word: str = "w") -> str:
    return " ".join([word] * n)


def openai_usage(srv: FakeOpenAIServer, messages: list[Any], model: str = "m") -> Any:
    body = {"model": model, "messages": messages}
    return httpx.post(srv.base_url + "/chat/completions", json=body).json()["usage"]


def anthropic_usage(srv: FakeOpenAIServer, model: str = "claude", **body: Any) -> Any:
    body = {"model": model, "max_tokens": 10, **body}
    return httpx.post(srv.anthropic_base_url + "/v1/messages", json=body).json()["usage"]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_openai_caches_a_long_enough_prefix_of_earlier_messages(server: FakeOpenAIServer) -> None:
    system = {"role": "system", "content": words(OPENAI_CACHE_MIN_TOKENS)}  # min + 3 tokens
    first = openai_usage(server, [system, user("one")])
    assert "prompt_tokens_details" not in first and server.calls[-1].cached_tokens == 0
    conversation = [system, user("one"), {"role": "assistant", "content": "fine"}, user("two")]
    again = openai_usage(server, conversation)
    cached = OPENAI_CACHE_MIN_TOKENS + 3 + 1 + 3  # system and "one": all the first request
    assert again["prompt_tokens_details"] == {"cached_tokens": cached}
    assert again["prompt_tokens"] == cached + 4 + 4 == server.calls[-1].prompt_tokens
    assert server.calls[-1].cached_tokens == cached
    # The last message is never counted cached, even in a repeated request.
    repeat = openai_usage(server, conversation)
    assert repeat["prompt_tokens_details"]["cached_tokens"] == cached + 4
    # Per model, and never a prefix below the minimum (here min - 8 + 3, + 1 + 3: min - 1).
    assert "prompt_tokens_details" not in openai_usage(server, conversation, model="other")
    short = [{"role": "system", "content": words(OPENAI_CACHE_MIN_TOKENS - 8)}, user("a")]
    openai_usage(server, short)
    assert "prompt_tokens_details" not in openai_usage(server, [*short, user("b")])


def test_openai_failed_requests_cache_nothing() -> None:
    with FakeOpenAIServer(fail_first=1) as srv:
        messages = [{"role": "system", "content": words(30)}, user("q")]
        httpx.post(srv.base_url + "/chat/completions", json={"messages": messages})
        assert "prompt_tokens_details" not in openai_usage(srv, [*messages, user("r")], "fake")


def test_anthropic_caches_up_to_the_last_cache_control(server: FakeOpenAIServer) -> None:
    system = [{"type": "text", "text": words(20), "cache_control": EPHEMERAL}]  # 20 + 3 tokens
    first = anthropic_usage(server, system=system, messages=[user("one two")])
    assert first == {
        "input_tokens": 2 + 3,
        "cache_creation_input_tokens": 23,
        "cache_read_input_tokens": 0,
        "output_tokens": 1,
    }
    call = server.calls[-1]
    assert (call.prompt_tokens, call.cache_creation_tokens, call.cached_tokens) == (28, 23, 0)
    second = anthropic_usage(server, system=system, messages=[user("three")])
    assert second["cache_read_input_tokens"] == 23 == server.calls[-1].cached_tokens
    assert (second["cache_creation_input_tokens"], second["input_tokens"]) == (0, 1 + 3)
    # No cache_control: no caching, even of a prefix cached before.
    plain = anthropic_usage(server, system=words(20), messages=[user("three")])
    assert plain["cache_read_input_tokens"] == plain["cache_creation_input_tokens"] == 0
    # Per model.
    other = anthropic_usage(server, model="other", system=system, messages=[user("x")])
    assert other["cache_creation_input_tokens"] == 23


def test_anthropic_longer_prefix_reads_the_cached_part_and_writes_the_rest(
    server: FakeOpenAIServer,
) -> None:
    tools = [{"name": "t", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}]
    system = [{"type": "text", "text": words(10)}]
    marked = {"type": "text", "text": words(5, "m"), "cache_control": EPHEMERAL}
    turn = [{"role": "user", "content": [marked]}, {"role": "assistant", "content": "ok"}]
    tools_only = anthropic_usage(server, tools=tools, system=system, messages=[user("a")])
    assert tools_only["cache_creation_input_tokens"] == 0  # tools count no tokens
    first = anthropic_usage(server, tools=tools, system=system, messages=[*turn, user("q")])
    assert (first["cache_read_input_tokens"], first["cache_creation_input_tokens"]) == (0, 13 + 8)
    assert first["input_tokens"] == 4 + 4
    # A later turn marks a later block: the earlier prefix is read, the new part written.
    later = {"type": "text", "text": words(3, "n"), "cache_control": EPHEMERAL}
    longer = [*turn, {"role": "user", "content": [later]}]
    usage = anthropic_usage(server, tools=tools, system=system, messages=longer)
    assert usage["cache_read_input_tokens"] == 13 + 8
    assert usage["cache_creation_input_tokens"] == 4 + 6  # "ok" and the new user message
    assert usage["input_tokens"] == 0
    # Another tool definition changes the prefix from the very start: nothing is read.
    other_tools = [{**tools[0], "name": "u"}]
    changed = anthropic_usage(server, tools=other_tools, system=system, messages=longer)
    assert changed["cache_read_input_tokens"] == 0
    assert changed["cache_creation_input_tokens"] == 13 + 8 + 4 + 6
