"""The fake server's side of faults and limits: the fault list and ``fault_for``, stopping with
requests held, the ``--fault`` spec and the command line, the raw bodies; ``max_tokens``, the
context window and lying usage (through litellm and over raw HTTP).

The fault matrix through litellm is in test_fake_faults.py, whose helpers these share.
"""

from __future__ import annotations

import os

# Must precede the litellm import: otherwise litellm fetches its cost map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import litellm
import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyrlm.testing.fake_faults import FAULT_MODES, STALL_AFTER_EVENTS, Fault, FaultMode
from polyrlm.testing.fake_server import FakeOpenAIServer, FakeServerProcess
from polyrlm.testing.fake_wire import FakeToolCall, completion_tokens, truncate
from tests.testing.test_fake_faults import (
    ANTHROPIC,
    BOTH,
    OPENAI,
    REPLY,
    STREAMED,
    TIMEOUT_S,
    ask,
    finish,
    raises,
    run,
    settled,
    streamed_text,
)

# litellm's own pydantic models trigger this UserWarning (not ours).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"
)

exc = litellm.exceptions


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(lambda body: REPLY) as srv:
        yield srv


# -- raw fault bodies -----------------------------------------------------------------------------


def test_status_fault_bodies_are_the_apis_error_shapes(server: FakeOpenAIServer) -> None:
    server.faults = [Fault("status", 429, retry_after_s=3, message="slow down")] * 2
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    openai = httpx.post(server.base_url + "/chat/completions", json=chat, timeout=TIMEOUT_S)
    anthropic = httpx.post(
        server.base_url + "/messages", json={**chat, "max_tokens": 5}, timeout=TIMEOUT_S
    )
    assert openai.status_code == anthropic.status_code == 429
    assert openai.headers["retry-after"] == anthropic.headers["retry-after"] == "3"
    assert openai.json() == {
        "error": {"message": "slow down", "type": "rate_limit_error", "code": "429"}
    }
    assert anthropic.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "slow down"},
    }


def test_stall_after_events_is_capped_before_the_last(server: FakeOpenAIServer) -> None:
    server.faults = [Fault("stall_stream", after_events=1000)]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with (
        httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=0.5) as r,
        pytest.raises(httpx.ReadTimeout),
    ):
        for _ in r.iter_bytes():
            pass
    for _ in range(100):  # the record is updated once the server sees the client gone
        if (call := server.calls[0]).disconnected:
            break
        time.sleep(0.01)
    assert call.chunks_sent == math.ceil(len(REPLY) / 8) + 2  # role, pieces, finish; no [DONE]


def test_html_page_is_text_html(server: FakeOpenAIServer) -> None:
    server.faults = [Fault("html")]
    page = httpx.post(server.base_url + "/chat/completions", json={"messages": []}, timeout=5)
    assert page.status_code == 502 and page.headers["content-type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in page.text


# -- max_tokens, the context window, lying usage --------------------------------------------------


@STREAMED
@pytest.mark.parametrize(
    ("model", "option"),
    [(OPENAI, "max_tokens"), (OPENAI, "max_completion_tokens"), (ANTHROPIC, "max_tokens")],
)
def test_max_tokens_cuts_the_reply(
    runner: asyncio.Runner, server: FakeOpenAIServer, model: str, stream: bool, option: str
) -> None:
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
    got = run(runner, ask(server, model, stream, **{option: 5, **options}))
    if stream:
        text, reason, usage = streamed_text(got), finish(got), got[-1].usage
    else:
        choice = got.choices[0]
        text, reason, usage = choice.message.content, choice.finish_reason, got.usage
    assert text == "w0 w1 w2 w3 w4"
    assert reason == "length"  # litellm maps Anthropic's stop_reason "max_tokens" to it
    call = run(runner, settled(server))
    assert usage.completion_tokens == call.completion_tokens == 5
    assert call.truncated and call.reply == text


def test_max_tokens_wire_shapes(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: "alpha beta STOP gamma delta"
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    openai = httpx.post(
        server.base_url + "/chat/completions",
        json={**chat, "max_tokens": 9, "max_completion_tokens": 3},  # the smaller cap wins
        timeout=TIMEOUT_S,
    ).json()
    assert openai["choices"][0]["message"]["content"] == "alpha beta STOP"
    assert openai["choices"][0]["finish_reason"] == "length"
    assert openai["usage"]["completion_tokens"] == 3
    url = server.base_url + "/messages"
    cut = httpx.post(url, json={**chat, "max_tokens": 2}, timeout=TIMEOUT_S).json()
    assert (cut["content"][0]["text"], cut["stop_reason"]) == ("alpha beta", "max_tokens")
    assert cut["usage"]["output_tokens"] == 2
    stop_first = {**chat, "max_tokens": 4, "stop_sequences": ["STOP"]}
    stopped = httpx.post(url, json=stop_first, timeout=TIMEOUT_S).json()
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "STOP")
    stop_later = {**chat, "max_tokens": 2, "stop_sequences": ["gamma"]}
    late = httpx.post(url, json=stop_later, timeout=TIMEOUT_S).json()
    assert (late["stop_reason"], late["stop_sequence"]) == ("max_tokens", None)
    bad = httpx.post(
        server.base_url + "/chat/completions", json={**chat, "max_tokens": 0}, timeout=5
    )
    assert bad.status_code == 400 and "max_tokens" in bad.json()["error"]["message"]


def test_max_tokens_drops_a_tool_call_that_does_not_fit() -> None:
    call = FakeToolCall("f", {"city": "Paris"})  # 1 + 2 words of arguments = 3 tokens
    assert truncate("a b", [call, call], 8) == ("a b", (call, call), False)
    assert truncate("a b", [call, call], 7) == ("a b", (call,), True)
    assert truncate("a b", [call], 4) == ("a b", (), True)
    assert truncate("  a\n b  c ", [call], 2) == ("  a\n b", (), True)


@given(
    words=st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=6), max_size=12),
    limit=st.integers(1, 15),
    calls=st.integers(0, 3),
)
def test_truncate_never_exceeds_the_limit(words: list[str], limit: int, calls: int) -> None:
    text = " ".join(words)
    tools = [FakeToolCall("f", {"n": i}) for i in range(calls)]
    cut, kept, truncated = truncate(text, tools, limit)
    assert completion_tokens(cut, kept) <= limit
    assert text.startswith(cut) and cut.split() == text.split()[: len(cut.split())]
    assert list(kept) == tools[: len(kept)]
    assert truncated == ((cut, kept) != (text, tuple(tools)))
    if not truncated:
        assert completion_tokens(text, tools) <= limit


@BOTH
@STREAMED
def test_context_window_exceeded(
    runner: asyncio.Runner, server: FakeOpenAIServer, model: str, stream: bool
) -> None:
    server.window_tokens = 10
    server.faults = [Fault("hang")]  # not consumed: the request is refused first
    long = " ".join(["word"] * 20)  # 20 + 3 tokens
    kind = exc.ContextWindowExceededError
    error = raises(runner, kind, ask(server, model, stream, content=long))
    assert error.status_code == 400 and isinstance(error, exc.BadRequestError)
    if model == OPENAI:
        assert "maximum context length is 10 tokens" in str(error)
        assert "resulted in 23 tokens" in str(error)
    else:
        assert "prompt is too long: 23 tokens > 10 maximum" in str(error)
    call = server.calls[-1]
    assert (call.status, call.prompt_tokens, call.fault) == (400, 23, None)
    assert server.faults == [Fault("hang")]
    server.faults = []
    fits = run(runner, ask(server, model, stream, content="one two three"))  # 3 + 3 tokens
    assert fits is not None


def test_context_window_error_body_is_openais(server: FakeOpenAIServer) -> None:
    server.window_tokens = 4
    body = {"model": "m", "messages": [{"role": "user", "content": "a b"}]}
    error = httpx.post(server.base_url + "/chat/completions", json=body, timeout=5).json()
    assert error == {
        "error": {
            "message": "This model's maximum context length is 4 tokens. However, your "
            "messages resulted in 5 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


@BOTH
@STREAMED
@pytest.mark.parametrize(("factor", "extra"), [(1.0, 7), (2.5, 0), (1.5, 3)])
def test_lying_usage(
    runner: asyncio.Runner,
    server: FakeOpenAIServer,
    model: str,
    stream: bool,
    factor: float,
    extra: int,
) -> None:
    server.usage_factor, server.extra_usage_tokens = factor, extra
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
    got = run(runner, ask(server, model, stream, max_tokens=5, **options))
    usage = got[-1].usage if stream else got.usage
    claimed = math.ceil(5 * factor) + extra
    assert usage.completion_tokens == claimed > 5  # more than max_tokens: it lies
    call = run(runner, settled(server))
    assert (call.completion_tokens, call.overreported_tokens) == (5, claimed - 5)
    assert usage.total_tokens == call.prompt_tokens + claimed


# -- the fault list, fault_for, stopping, the command line ---------------------------------------


def test_faults_are_consumed_in_order_one_per_request(server: FakeOpenAIServer) -> None:
    server.faults = [Fault("status", 500), Fault("html"), Fault("status", 429)]
    url, body = server.base_url + "/chat/completions", {"messages": list[Any]()}
    statuses = [httpx.post(url, json=body, timeout=5).status_code for _ in range(4)]
    assert statuses == [500, 502, 429, 200]
    assert [c.fault for c in server.calls] == ["status", "html", "status", None]
    server.faults.append(Fault("status", 503))  # the list may change live
    assert httpx.post(url, json=body, timeout=5).status_code == 503


def test_concurrent_requests_consume_each_fault_once(server: FakeOpenAIServer) -> None:
    server.faults = [Fault("status", 500)] * 7
    server.latency_s = 0.05

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            url = server.base_url + "/chat/completions"
            posts = (client.post(url, json={"messages": []}) for _ in range(20))
            return [r.status_code for r in await asyncio.gather(*posts)]

    statuses = asyncio.run(burst())
    assert sorted(statuses) == [200] * 13 + [500] * 7 and server.faults == []


def test_fault_for_picks_by_request(server: FakeOpenAIServer) -> None:
    server.fault_for = lambda body: Fault("status", 503) if body.get("stream") else None
    url = server.base_url + "/chat/completions"
    assert httpx.post(url, json={"messages": []}, timeout=5).status_code == 200
    assert httpx.post(url, json={"messages": [], "stream": True}, timeout=5).status_code == 503
    server.faults = [Fault("status", 401)]  # the list comes first
    assert httpx.post(url, json={"messages": [], "stream": True}, timeout=5).status_code == 401

    def broken(body: dict[str, Any]) -> Fault | None:
        raise RuntimeError("picker bug")

    server.fault_for = broken
    failed = httpx.post(url, json={"messages": []}, timeout=5)
    assert failed.status_code == 500 and "picker bug" in failed.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "streamed"),
    [(Fault("hang"), False), (Fault("stall_stream"), True), (Fault("stall_stream"), False)],
)
def test_stop_does_not_wait_for_held_requests(fault: Fault, streamed: bool) -> None:
    outcome: list[BaseException] = []

    def client(url: str) -> None:
        body: dict[str, Any] = {"messages": [], "stream": streamed}
        try:
            with httpx.stream("POST", url, json=body, timeout=TIMEOUT_S) as response:
                for _ in response.iter_bytes():
                    pass
        except httpx.HTTPError as error:
            outcome.append(error)

    srv = FakeOpenAIServer(lambda body: REPLY, faults=[fault]).start()
    thread = threading.Thread(target=client, args=(srv.base_url + "/chat/completions",))
    thread.start()
    try:
        srv.wait_for_calls(1)
        time.sleep(0.1)  # let it settle into holding
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 0.5
    finally:
        srv.stop()
        thread.join(TIMEOUT_S)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.RemoteProtocolError)
    call = srv.calls[0]
    assert (call.fault, call.disconnected) == (fault.mode, False)  # the server went, not it


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        ("status:429:retry-after=5", Fault("status", 429, retry_after_s=5)),
        ("html", Fault("html")),
        ("html:503", Fault("html", 503)),
        ("hang", Fault("hang")),
        ("stall_stream:after=2", Fault("stall_stream", after_events=2)),
        ("status:400:message=no such model", Fault("status", 400, message="no such model")),
    ],
)
def test_fault_specs(spec: str, fault: Fault) -> None:
    assert Fault.parse(spec) == fault
    assert Fault.parse(fault.spec()) == fault


@given(
    mode=st.sampled_from(FAULT_MODES),
    status=st.one_of(st.none(), st.integers(400, 599)),
    retry_after=st.one_of(st.none(), st.integers(0, 3600)),
    after=st.integers(0, 2 * STALL_AFTER_EVENTS),
)
def test_fault_specs_round_trip(
    mode: FaultMode, status: int | None, retry_after: int | None, after: int
) -> None:
    if mode == "status":
        status = status or 500
    elif mode != "html":
        status = None  # only status and html faults take one
    fault = Fault(mode, status, retry_after_s=retry_after, after_events=after)
    assert Fault.parse(fault.spec()) == fault


@pytest.mark.parametrize(
    "spec", ["nope", "status", "status:200", "hang:503", "hang:retry-after=x", "hang:colour=red"]
)
def test_bad_fault_specs(spec: str) -> None:
    with pytest.raises(ValueError, match=r"fault|status"):
        Fault.parse(spec)


def test_headers_have_no_command_line_form() -> None:
    with pytest.raises(ValueError, match="command-line"):
        Fault("status", 429, headers=(("x", "y"),)).spec()


def test_subprocess_serves_faults_and_window(runner: asyncio.Runner) -> None:
    faults = [Fault("status", 429, retry_after_s=5), Fault("html")]
    with FakeServerProcess(faults=faults, window_tokens=10, extra_usage_tokens=2) as proc:
        assert "--window-tokens" in proc.command()
        error = raises(runner, exc.RateLimitError, ask(proc, OPENAI))
        assert error.litellm_response_headers["retry-after"] == "5"
        raises(runner, exc.BadGatewayError, ask(proc, ANTHROPIC))
        long = " ".join(["word"] * 20)
        raises(runner, exc.ContextWindowExceededError, ask(proc, OPENAI, content=long))
        response = run(runner, ask(proc, ANTHROPIC))
        assert response.usage.completion_tokens == 2 + 2  # "echo: hi" + 2 extra
    assert proc.returncode == 0


def test_cli_rejects_a_bad_fault(capsys: pytest.CaptureFixture[str]) -> None:
    from polyrlm.testing.fake_server import main

    with pytest.raises(SystemExit):
        main(["--fault", "explode"])
    assert "--fault" in capsys.readouterr().err
