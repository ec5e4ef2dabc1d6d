"""litellm's real OpenAI and Anthropic provider code against the fake server, end to end."""

from __future__ import annotations

import os

# Must precede the litellm import: otherwise litellm fetches its cost map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import litellm
import pytest

from polyrlm.testing.fake_server import (
    FakeOpenAIServer,
    FakeReply,
    FakeToolCall,
    ServedCall,
)

# litellm's own pydantic models trigger this UserWarning (not ours).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"
)

T = TypeVar("T")
OPENAI, ANTHROPIC = "openai/gpt-4o", "anthropic/claude-sonnet-4-5"
BOTH = pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
WEATHER = FakeToolCall("get_weather", {"city": "Paris", "units": "celsius"})
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def run(runner: asyncio.Runner, coro: Coroutine[Any, Any, T]) -> T:
    return runner.run(coro)


async def ask(srv: FakeOpenAIServer, model: str, messages: Any, **kwargs: Any) -> Any:
    base = srv.base_url if model == OPENAI else srv.anthropic_base_url
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return await litellm.acompletion(
        model=model, api_base=base, api_key="x", messages=messages, **kwargs
    )


async def next_call(srv: FakeOpenAIServer, count: int) -> ServedCall:
    # Not srv.wait_for_calls: a closed stream's socket only closes when this loop runs on.
    for _ in range(500):
        if len(calls := srv.calls) >= count:
            return calls[count - 1]
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no call {count}")


@BOTH
def test_text_and_usage(runner: asyncio.Runner, server: FakeOpenAIServer, model: str) -> None:
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "a b c"}]
    response = run(runner, ask(server, model, messages))
    assert response.choices[0].message.content == "echo: a b c"
    assert response.choices[0].finish_reason == "stop"
    call = server.calls[-1]
    assert response.usage.prompt_tokens == call.prompt_tokens == (2 + 3) + (3 + 3)
    assert response.usage.completion_tokens == call.completion_tokens == 4
    if model == OPENAI:
        assert call.path == "/v1/chat/completions"
        assert call.headers["authorization"] == "Bearer x"
    else:
        assert call.path == "/v1/messages"
        assert call.headers["x-api-key"] == "x" and "authorization" not in call.headers
        assert call.headers["anthropic-version"] == "2023-06-01"
        # litellm always sends max_tokens (the model's maximum) and the system as text blocks.
        assert isinstance(call.body["max_tokens"], int)
        assert call.body["system"] == [{"type": "text", "text": "Be terse."}]


@BOTH
def test_streamed_text_and_usage(
    runner: asyncio.Runner, server: FakeOpenAIServer, model: str
) -> None:
    async def scenario() -> list[Any]:
        options = {"include_usage": True}
        stream = await ask(
            server, model, "stream this reply please", stream=True, stream_options=options
        )
        return [chunk async for chunk in stream]

    chunks = run(runner, scenario())
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "echo: stream this reply please"
    assert len(texts) > 3
    call = server.calls[-1]
    assert call.chunks_sent > len(texts) and not call.disconnected
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (call.prompt_tokens, 5)


@BOTH
@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls(
    runner: asyncio.Runner, server: FakeOpenAIServer, model: str, stream: bool
) -> None:
    server.responder = lambda body: (
        "sunny" if body["messages"][-1]["role"] == "tool" else FakeReply("let me check", (WEATHER,))
    )

    async def scenario() -> tuple[str | None, list[dict[str, Any]], str]:
        response = await ask(server, model, "weather in Paris?", tools=TOOLS, stream=stream)
        if not stream:
            message = response.choices[0].message
            calls = [c.model_dump() for c in message.tool_calls]
            return response.choices[0].finish_reason, calls, message.content
        finish, text, calls = None, "", []
        async for chunk in response:
            delta = chunk.choices[0].delta
            text += delta.content or ""
            for piece in delta.tool_calls or []:
                if piece.id:  # the first delta of a call
                    calls.append({"id": piece.id, "function": {"name": piece.function.name}})
                    calls[-1]["function"]["arguments"] = ""
                calls[-1]["function"]["arguments"] += piece.function.arguments or ""
            finish = chunk.choices[0].finish_reason or finish
        return finish, calls, text

    finish, calls, text = run(runner, scenario())
    assert finish == "tool_calls" and text == "let me check"
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert json.loads(calls[0]["function"]["arguments"]) == WEATHER.arguments
    assert calls[0]["id"] == server.calls[-1].tool_calls[0].id
    assert server.calls[-1].body["tools"][0]["name" if model == ANTHROPIC else "type"]
    # The tool's result goes back; the responder reads it the same way for both APIs.
    assistant = {
        "role": "assistant",
        "content": text,
        "tool_calls": [{"type": "function", **c} for c in calls],
    }
    result = {"role": "tool", "tool_call_id": calls[0]["id"], "content": "22 degrees"}
    conversation = [{"role": "user", "content": "weather in Paris?"}, assistant, result]
    answer = run(runner, ask(server, model, conversation, tools=TOOLS))
    assert answer.choices[0].message.content == "sunny"
    last = server.calls[-1]
    assert [m["role"] for m in last.messages] == ["user", "assistant", "tool"]
    assert last.messages[-1]["content"] == "22 degrees"
    # (3+3) + (3+3 + the call: 1 + 4 words of arguments) + (2+3), the same for both APIs
    assert answer.usage.prompt_tokens == last.prompt_tokens == 6 + 11 + 5


def test_anthropic_via_base_url_too(runner: asyncio.Runner, server: FakeOpenAIServer) -> None:
    response = run(
        runner,
        litellm.acompletion(
            model=ANTHROPIC,
            api_base=server.base_url,
            api_key="x",
            messages=[{"role": "user", "content": "hi"}],
        ),
    )
    assert response.choices[0].message.content == "echo: hi"
    assert server.calls[-1].path == "/v1/v1/messages"  # litellm appended /v1/messages


@pytest.mark.parametrize(
    ("model", "status", "error"),
    [
        (ANTHROPIC, 400, litellm.exceptions.BadRequestError),
        (ANTHROPIC, 401, litellm.exceptions.AuthenticationError),
        (ANTHROPIC, 429, litellm.exceptions.RateLimitError),
        (ANTHROPIC, 500, litellm.exceptions.InternalServerError),
        (ANTHROPIC, 529, litellm.exceptions.InternalServerError),  # litellm maps overloaded to 500
        (OPENAI, 401, litellm.exceptions.AuthenticationError),
        (OPENAI, 503, litellm.exceptions.ServiceUnavailableError),
    ],
)
def test_error_statuses_surface_as_litellm_exceptions(
    runner: asyncio.Runner, model: str, status: int, error: type[Exception]
) -> None:
    with FakeOpenAIServer(fail_first=1, fail_status=status) as srv:
        with pytest.raises(error, match="fake failure"):
            run(runner, ask(srv, model, "hi", max_retries=0))
        assert [c.status for c in srv.calls] == [status]  # the Anthropic path does not retry


def test_anthropic_invalid_max_tokens_is_a_bad_request(
    runner: asyncio.Runner, server: FakeOpenAIServer
) -> None:
    # litellm never leaves max_tokens out (it fills in the model's maximum), but it passes 0 on.
    with pytest.raises(litellm.exceptions.BadRequestError, match="max_tokens"):
        run(runner, ask(server, ANTHROPIC, "hi", max_tokens=0))
    assert server.calls[-1].status == 400 and server.calls[-1].body["max_tokens"] == 0


def test_cached_tokens_openai(runner: asyncio.Runner, server: FakeOpenAIServer) -> None:
    system = {"role": "system", "content": " ".join(["rule"] * 30)}
    run(runner, ask(server, OPENAI, [system, {"role": "user", "content": "one"}]))
    turn = [system, {"role": "user", "content": "one"}, {"role": "assistant", "content": "echo"}]
    response = run(runner, ask(server, OPENAI, [*turn, {"role": "user", "content": "two"}]))
    call = server.calls[-1]
    assert call.cached_tokens == 33 + 4
    assert response.usage.prompt_tokens_details.cached_tokens == call.cached_tokens
    assert response.usage.prompt_tokens == call.prompt_tokens == 33 + 4 + 4 + 4


def test_cached_tokens_anthropic(runner: asyncio.Runner, server: FakeOpenAIServer) -> None:
    rules = {
        "type": "text",
        "text": " ".join(["rule"] * 30),
        "cache_control": {"type": "ephemeral"},
    }
    system = {"role": "system", "content": [rules]}
    first = run(runner, ask(server, ANTHROPIC, [system, {"role": "user", "content": "one"}]))
    assert server.calls[-1].body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert first.usage.cache_creation_input_tokens == server.calls[-1].cache_creation_tokens == 33
    assert first.usage.prompt_tokens == server.calls[-1].prompt_tokens == 33 + 4
    second = run(runner, ask(server, ANTHROPIC, [system, {"role": "user", "content": "two two"}]))
    call = server.calls[-1]
    assert call.cached_tokens == 33 and call.cache_creation_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == 33
    assert second.usage.cache_read_input_tokens == 33
    assert second.usage.prompt_tokens == call.prompt_tokens == 33 + 5  # litellm adds them back


@BOTH
def test_closing_a_stream_early(runner: asyncio.Runner, model: str) -> None:
    reply = " ".join(["word"] * 30)

    async def scenario(srv: FakeOpenAIServer) -> tuple[ServedCall, ServedCall, str]:
        stream = await ask(srv, model, "hi", stream=True)
        received = 0
        async for _chunk in stream:
            received += 1
            if received == 3:
                break
        await stream.aclose()  # CustomStreamWrapper.aclose closes the HTTP response
        early = await next_call(srv, 1)
        whole = await ask(srv, model, "hi", stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in whole])
        return early, await next_call(srv, 2), text

    with FakeOpenAIServer(lambda body: reply, stream_delay_s=0.01) as srv:
        early, full, text = run(runner, scenario(srv))
    assert early.disconnected and not full.disconnected
    assert 3 <= early.chunks_sent < full.chunks_sent
    assert text == reply  # the server went on serving
