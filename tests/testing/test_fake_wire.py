"""The fake server's wire formats over raw HTTP: tool calls, real streaming, Anthropic, caching."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polyrlm.testing.fake_server import (
    STREAM_CHUNK_CHARS,
    FakeOpenAIServer,
    FakeReply,
    FakeToolCall,
)

WEATHER = FakeToolCall("get_weather", {"city": "Paris", "units": "celsius"})


def weather(body: dict[str, Any]) -> FakeReply:
    return FakeReply("let me check the weather", (WEATHER,))


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def openai(srv: FakeOpenAIServer, **body: Any) -> httpx.Response:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **body}
    return httpx.post(srv.base_url + "/chat/completions", json=body, timeout=10)


def anthropic(srv: FakeOpenAIServer, **body: Any) -> httpx.Response:
    body = {"model": "claude", "max_tokens": 100, **body}
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    return httpx.post(srv.anthropic_base_url + "/v1/messages", json=body, headers=headers)


def sse(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each SSE event."""
    events = []
    for frame in filter(None, text.split("\n\n")):
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        events.append((lines.get("event"), lines["data"]))
    return events


def test_openai_tool_calls(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: FakeReply(tool_calls=(WEATHER, FakeToolCall("f", {}, "mine")))
    data = openai(server, tools=[{"type": "function", "function": {"name": "get_weather"}}]).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [(c["id"], c["type"], c["function"]["name"]) for c in calls] == [
        ("call_1", "function", "get_weather"),
        ("mine", "function", "f"),
    ]
    assert json.loads(calls[0]["function"]["arguments"]) == WEATHER.arguments
    served = server.calls[-1]
    assert [c.id for c in served.tool_calls] == ["call_1", "mine"]
    # each call: 1 for its name + the words of its JSON arguments ('{"city": "Paris", ...}': 4)
    assert served.completion_tokens == data["usage"]["completion_tokens"] == (1 + 4) + (1 + 1)
    assert served.body["tools"][0]["function"]["name"] == "get_weather"
    assert served.path == "/v1/chat/completions"


def test_openai_stream_chunks_text_then_tool_calls(server: FakeOpenAIServer) -> None:
    server.responder = weather
    resp = openai(server, stream=True, stream_options={"include_usage": True})
    events = sse(resp.text)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    texts = [d["content"] for d in deltas[1:] if d.get("content")]
    assert "".join(texts) == "let me check the weather"
    assert len(texts) > 1 and all(len(t) <= STREAM_CHUNK_CHARS for t in texts)
    tool_deltas = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    first = tool_deltas[0]
    assert first == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    fragments = [t["function"]["arguments"] for t in tool_deltas[1:]]
    assert all(set(t) == {"index", "function"} for t in tool_deltas[1:])
    assert json.loads("".join(fragments)) == WEATHER.arguments
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 10
    assert all(c["usage"] is None for c in chunks[:-1])
    assert server.calls[-1].chunks_sent == len(events)


def test_stream_is_really_streamed(server: FakeOpenAIServer) -> None:
    server.stream_delay_s = 0.05
    server.responder = lambda body: "x" * (10 * STREAM_CHUNK_CHARS)  # 13 events, 10 paced
    url = server.base_url + "/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    started = time.perf_counter()
    arrivals = []
    with httpx.stream("POST", url, json=body, timeout=10) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.perf_counter() - started)
    assert len(arrivals) == 13
    assert arrivals[0] < 0.25 < 0.45 < arrivals[-1]  # the first came long before the last


def test_client_gone_mid_stream_is_recorded_quietly(
    server: FakeOpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.stream_delay_s = 0.02
    server.responder = lambda body: "y" * (40 * STREAM_CHUNK_CHARS)
    caplog.set_level(logging.DEBUG)
    for url in (server.base_url + "/chat/completions", server.anthropic_base_url + "/v1/messages"):
        body = {"model": "m", "max_tokens": 9, "stream": True}
        body["messages"] = [{"role": "user", "content": "hi"}]
        with httpx.stream("POST", url, json=body, timeout=10) as resp:
            lines = resp.iter_lines()
            while not next(lines).startswith("data: "):
                pass
        call = server.wait_for_calls(len(server.calls) + 1)[-1]
        assert call.disconnected and 1 <= call.chunks_sent < 40
    assert openai(server).status_code == 200  # still serving
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


def test_anthropic_message(server: FakeOpenAIServer) -> None:
    resp = anthropic(server, system="Be terse.", messages=[{"role": "user", "content": "a b"}])
    assert resp.status_code == 200
    data = resp.json()
    assert data == {
        "id": data["id"],
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "text", "text": "echo: a b"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 2 + 3 + 2 + 3,  # system and user message, each words + 3
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 3,
        },
    }
    assert data["id"].startswith("msg_")
    served = server.calls[-1]
    assert served.messages == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "a b"},
    ]
    assert served.body["system"] == "Be terse." and served.headers["x-api-key"] == "k"
    assert served.path == "/v1/messages"


def test_anthropic_tool_use_stop_sequences_and_paths(server: FakeOpenAIServer) -> None:
    server.responder = weather
    content = anthropic(server).json()["content"]
    assert content[0] == {"type": "text", "text": "let me check the weather"}
    assert content[1] == {"type": "tool_use", "id": "toolu_1", "name": "get_weather"} | {
        "input": WEATHER.arguments
    }
    assert anthropic(server).json()["stop_reason"] == "tool_use"
    stopped = anthropic(server, stop_sequences=["zzz", "the"]).json()
    assert stopped["content"] == [{"type": "text", "text": "let me check "}]  # no tool call
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "the")
    root = server.anthropic_base_url
    for path in ("/messages", "/v1/v1/messages"):  # /v1/v1: litellm given base_url
        body = {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(root + path, json=body).json()["type"] == "message"


def test_anthropic_stream_event_sequence(server: FakeOpenAIServer) -> None:
    server.responder = weather
    events = sse(anthropic(server, stream=True).text)
    names = [name for name, _ in events]
    data = [json.loads(d) for _, d in events]
    assert all(d["type"] == name for name, d in zip(names, data, strict=True))
    arguments = json.dumps(WEATHER.arguments)
    reply, size = "let me check the weather", STREAM_CHUNK_CHARS
    expected_texts = [reply[i : i + size] for i in range(0, len(reply), size)]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * len(expected_texts),
        "content_block_stop",
        "content_block_start",
        *["content_block_delta"] * -(-len(arguments) // STREAM_CHUNK_CHARS),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = data[0]["message"]
    assert (start["content"], start["stop_reason"], start["usage"]["input_tokens"]) == ([], None, 4)
    assert data[2] == {"type": "content_block_start", "index": 0} | {
        "content_block": {"type": "text", "text": ""}
    }
    texts = [d["delta"]["text"] for d in data if d.get("delta", {}).get("type") == "text_delta"]
    assert texts == expected_texts and len(texts) > 1
    tool_start = next(d for d in data if d.get("content_block", {}).get("type") == "tool_use")
    assert tool_start == {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
    }
    partial = [d["delta"]["partial_json"] for d in data if d.get("index") == 1 and "delta" in d]
    assert json.loads("".join(partial)) == WEATHER.arguments
    assert all(len(p) <= STREAM_CHUNK_CHARS for p in partial)
    assert data[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert data[-2]["usage"] == {"output_tokens": server.calls[-1].completion_tokens}
    assert server.calls[-1].chunks_sent == len(events) and not server.calls[-1].disconnected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"max_tokens": 0}, "max_tokens: Input should be an integer"),
        ({"messages": []}, "messages: at least one message"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"model": None}, "model: Field required"),
    ],
)
def test_anthropic_invalid_requests(
    server: FakeOpenAIServer, body: dict[str, Any], message: str
) -> None:
    sent = {k: v for k, v in {"model": "c", "max_tokens": 5, **body}.items() if v is not None}
    sent.setdefault("messages", [{"role": "user", "content": "hi"}])
    resp = httpx.post(server.anthropic_base_url + "/v1/messages", json=sent)
    assert resp.status_code == 400
    error = resp.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(message)
    assert server.calls[-1].status == 400 and server.calls[-1].body == sent


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "rate_limit_error"),
        (401, "authentication_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
        (503, "api_error"),
    ],
)
def test_anthropic_error_shapes(status: int, kind: str) -> None:
    with FakeOpenAIServer(fail_first=1, fail_status=status) as srv:
        resp = anthropic(srv)
        assert resp.status_code == status
        assert resp.json() == {
            "type": "error",
            "error": {"type": kind, "message": resp.json()["error"]["message"]},
        }
        assert anthropic(srv).status_code == 200

        def broken_responder(body: dict[str, Any]) -> str:
            return str(1 / 0)

        srv.responder = broken_responder
        broken = anthropic(srv)
        assert broken.status_code == 500 and broken.json()["error"]["type"] == "api_error"
        assert "ZeroDivisionError" in broken.json()["error"]["message"]


def test_anthropic_blocks_reach_the_responder_as_openai_messages(server: FakeOpenAIServer) -> None:
    seen: list[dict[str, Any]] = []

    def recording(body: dict[str, Any]) -> str:
        seen.append(body)
        return "ok"

    server.responder = recording
    use = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}
    sunny = [{"type": "text", "text": "sunny"}]
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": "t1", "content": sunny}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "weather"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "checking"}, use]},
        {"role": "user", "content": [result, {"type": "text", "text": "and so?"}]},
    ]
    system = [{"type": "text", "text": "Be", "cache_control": {"type": "ephemeral"}}]
    system.append({"type": "text", "text": "terse."})
    anthropic(server, system=system, messages=messages, temperature=0.5)
    arguments = json.dumps({"city": "Paris"})
    expected = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "weather"},
        {
            "role": "assistant",
            "content": "checking",
            "tool_calls": [
                {"id": "t1"}
                | {"type": "function", "function": {"name": "get_weather", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "user", "content": "and so?"},
    ]
    assert seen[0]["messages"] == expected == server.calls[-1].messages
    assert "system" not in seen[0] and seen[0]["temperature"] == 0.5
    assert server.calls[-1].body["messages"] == messages  # the raw request
    # (2+3) + (1+3) + (1+3 + 1 for the call's name + 2 words of arguments) + (1+3) + (2+3)
    assert server.calls[-1].prompt_tokens == 5 + 4 + 7 + 4 + 5
