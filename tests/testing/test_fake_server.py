"""Tests of the fake OpenAI-compatible server (raw HTTP, through litellm, and as a subprocess).

The Anthropic format, tool calls, streaming and caching are in test_fake_wire*.py.
"""

from __future__ import annotations

import os

# Must precede the litellm import: otherwise litellm fetches its cost map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import litellm
import pytest

from polyrlm.testing.fake_server import (
    FakeOpenAIServer,
    FakeServerProcess,
    ServedCall,
    echo_responder,
)

# litellm's own pydantic models trigger this UserWarning (not ours); filterwarnings=error
# would otherwise turn it into a failure inside litellm.completion.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"
)


@pytest.fixture
def litellm_loop() -> Iterator[None]:
    # Sync litellm.completion calls asyncio.get_event_loop() for its service-logging hook, which
    # silently creates a main-thread loop nobody closes; a later asyncio.run() then drops it and
    # filterwarnings=error fails on the ResourceWarning. Give it a loop we close ourselves.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def post(
    srv: FakeOpenAIServer, body: dict[str, Any], path: str = "/chat/completions"
) -> httpx.Response:
    return httpx.post(srv.base_url + path, json=body, timeout=10)


def chat(*contents: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake",
        "messages": [{"role": "user", "content": c} for c in contents],
        **extra,
    }


def test_echo_reply_and_hand_computed_token_counts(server: FakeOpenAIServer) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},  # 3 words
        {"role": "user", "content": "say  hello\nto me"},  # 4 words (any whitespace splits)
    ]
    resp = post(server, {"model": "my-model", "messages": messages})
    assert resp.status_code == 200
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "my-model"
    assert data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "echo: say  hello\nto me"},
            "finish_reason": "stop",
        }
    ]
    # prompt: 3 + 4 words + 3 per message * 2 = 13; reply "echo: say hello to me" = 5 words.
    assert data["usage"] == {"prompt_tokens": 13, "completion_tokens": 5, "total_tokens": 18}
    body = {"model": "my-model", "messages": messages}
    assert server.calls == [
        ServedCall(
            "my-model",
            messages,
            "echo: say  hello\nto me",
            13,
            5,
            200,
            path="/v1/chat/completions",
            body=body,
            headers=server.calls[0].headers,
        )
    ]
    assert server.calls[0].headers["content-type"] == "application/json"


def test_content_parts_and_empty_reply_counts() -> None:
    parts = [{"type": "text", "text": "a b"}, {"type": "image_url", "image_url": {}}]
    parts.append({"type": "text", "text": "c"})
    body = {"messages": [{"role": "user", "content": parts}]}
    assert echo_responder(body) == "echo: a b c"
    with FakeOpenAIServer(responder=lambda b: "") as srv:
        usage = post(srv, body).json()["usage"]
    # prompt: 3 words + 3; an empty reply still counts as 1 completion token.
    assert usage == {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7}


def test_models_endpoint_and_unprefixed_path(server: FakeOpenAIServer) -> None:
    models = httpx.get(server.base_url + "/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == ["fake"]
    root = server.base_url.removesuffix("/v1")
    resp = httpx.post(root + "/chat/completions", json=chat("hi"), timeout=10)
    assert resp.json()["choices"][0]["message"]["content"] == "echo: hi"


@pytest.mark.usefixtures("litellm_loop")
def test_litellm_completion_reports_server_usage(server: FakeOpenAIServer) -> None:
    response: Any = litellm.completion(
        model="openai/fake",
        api_base=server.base_url,
        api_key="x",
        messages=[{"role": "user", "content": "what is two plus two"}],
    )
    assert response.choices[0].message.content == "echo: what is two plus two"
    assert response.usage.prompt_tokens == 5 + 3 == server.calls[-1].prompt_tokens
    assert response.usage.completion_tokens == 6


def test_stop_sequences(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: "alpha beta STOP gamma END delta"
    first = post(server, chat("x", stop=["END", "STOP"])).json()
    assert first["choices"][0]["message"]["content"] == "alpha beta "
    assert first["usage"]["completion_tokens"] == 2
    single = post(server, chat("x", stop="gamma")).json()
    assert single["choices"][0]["message"]["content"] == "alpha beta STOP "
    unmatched = post(server, chat("x", stop=["zzz"])).json()
    assert unmatched["choices"][0]["message"]["content"] == "alpha beta STOP gamma END delta"


@pytest.mark.parametrize("status", [429, 503])
def test_fail_first_then_success(status: int) -> None:
    with FakeOpenAIServer(fail_first=2, fail_status=status) as srv:
        responses = [post(srv, chat("hi")) for _ in range(3)]
        assert [r.status_code for r in responses] == [status, status, 200]
        error = responses[0].json()["error"]
        assert set(error) == {"message", "type", "code"}
        assert error["type"] == ("rate_limit_error" if status == 429 else "server_error")
        assert [c.status for c in srv.calls] == [status, status, 200]


@pytest.mark.usefixtures("litellm_loop")
def test_litellm_max_retries_zero_surfaces_429_once() -> None:
    # litellm's OpenAI client retries 429/5xx by itself (2 retries) unless max_retries=0.
    with FakeOpenAIServer(fail_first=1) as srv:
        with pytest.raises(litellm.exceptions.RateLimitError):
            litellm.completion(
                model="openai/fake",
                api_base=srv.base_url,
                api_key="x",
                messages=[{"role": "user", "content": "hi"}],
                max_retries=0,
            )
        assert [c.status for c in srv.calls] == [429]


def test_latency_sleeps_concurrently(server: FakeOpenAIServer) -> None:
    server.latency_s = 0.5

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            url = server.base_url + "/chat/completions"
            responses = await asyncio.gather(
                *(client.post(url, json=chat("hi")) for _ in range(20))
            )
        return [r.status_code for r in responses]

    started = time.perf_counter()
    statuses = asyncio.run(burst())
    elapsed = time.perf_counter() - started
    assert statuses == [200] * 20
    assert 0.5 <= elapsed < 1.5, elapsed


def test_responder_error_is_500(server: FakeOpenAIServer) -> None:
    def broken(body: dict[str, Any]) -> str:
        raise ValueError("boom")

    server.responder = broken
    resp = post(server, chat("hi"))
    assert resp.status_code == 500
    assert "boom" in resp.json()["error"]["message"]
    assert server.calls[-1].status == 500


def test_malformed_json_is_400(server: FakeOpenAIServer) -> None:
    url = server.base_url + "/chat/completions"
    resp = httpx.post(url, content=b"{not json", timeout=10)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert httpx.post(url, json=[1, 2], timeout=10).status_code == 400
    assert [c.status for c in server.calls] == [400, 400]


def test_streaming_sse(server: FakeOpenAIServer) -> None:
    usage_options = {"stream_options": {"include_usage": True}}
    resp = post(server, chat("stream me", stream=True, **usage_options))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [line for line in resp.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == "echo: stream me"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    # OpenAI's include_usage: a last chunk without choices carries the usage.
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert server.calls[-1].chunks_sent == len(events)
    assert not server.calls[-1].disconnected
    without = post(server, chat("stream me", stream=True)).text.split("\n\n")
    assert all('"usage"' not in e for e in without)  # no usage unless asked for


@pytest.mark.usefixtures("litellm_loop")
def test_litellm_streaming(server: FakeOpenAIServer) -> None:
    stream: Any = litellm.completion(
        model="openai/fake",
        api_base=server.base_url,
        api_key="x",
        messages=[{"role": "user", "content": "stream me please"}],
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "echo: stream me please"


def test_subprocess_cli() -> None:
    with FakeServerProcess(latency_s=0.0) as proc:
        assert proc.base_url.startswith("http://127.0.0.1:")
        assert proc.base_url.endswith("/v1")
        process = proc.process
        assert process is not None
        resp = httpx.post(proc.base_url + "/chat/completions", json=chat("ping"), timeout=10)
        assert resp.json()["choices"][0]["message"]["content"] == "echo: ping"
    assert proc.returncode == 0  # SIGTERM is handled: clean exit, not killed
    assert process.poll() == 0
    assert proc.process is None


def test_stop_is_idempotent_and_frees_port() -> None:
    srv = FakeOpenAIServer().start()
    port = int(srv.base_url.rsplit(":", 1)[1].removesuffix("/v1"))
    assert post(srv, chat("hi")).status_code == 200
    srv.stop()
    srv.stop()
    with socket.socket() as sock:
        # SO_REUSEADDR tolerates TIME_WAIT leftovers but not a listening socket (EADDRINUSE).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    with pytest.raises(httpx.ConnectError):
        httpx.post(srv.base_url + "/chat/completions", json=chat("hi"), timeout=2)
