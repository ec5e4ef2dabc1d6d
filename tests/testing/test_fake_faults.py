"""The fake server's faults through litellm: what each one makes litellm raise or return.

Each fault is served to litellm's real OpenAI and Anthropic code (``max_retries=0``, short
timeouts), streamed and not, and the exact exception class (or the returned object) is pinned:
the table in ``polyrlm.testing.fake_faults`` is what these tests check. The server side (the
fault list, specs, the command line) and the limits (max_tokens, window, usage) are in
test_fake_faults_server.py.
"""

from __future__ import annotations

import os

# Must precede the litellm import: otherwise litellm fetches its cost map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import litellm
import pytest

from polyrlm.testing.fake_faults import Fault
from polyrlm.testing.fake_server import FakeOpenAIServer, FakeServerProcess, ServedCall

# litellm's own pydantic models trigger this UserWarning (not ours).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"
)

T = TypeVar("T")
OPENAI, ANTHROPIC = "openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-20241022"
BOTH = pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
#: 40 words, 40 completion tokens by the server's rule; long enough to stream in many pieces.
REPLY = " ".join(f"w{i}" for i in range(40))
#: The client's deadline where a fault never answers: short, the tests wait it out.
HANG_TIMEOUT_S = 0.5
#: Any other request's deadline: a fault that should fail fast must not wait for it.
TIMEOUT_S = 5.0
exc = litellm.exceptions


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(lambda body: REPLY) as srv:
        yield srv


def run(runner: asyncio.Runner, coro: Coroutine[Any, Any, T]) -> T:
    return runner.run(coro)


def base(srv: FakeOpenAIServer | FakeServerProcess, model: str) -> str:
    return srv.base_url if model == OPENAI else srv.anthropic_base_url


async def ask(
    srv: FakeOpenAIServer | FakeServerProcess,
    model: str,
    stream: bool = False,
    received: list[Any] | None = None,
    content: str = "hi",
    opened: list[bool] | None = None,
    **kwargs: Any,
) -> Any:
    """The response, or for a stream the list of its chunks (also kept in ``received``, so a
    test sees what arrived before a stream broke off). ``opened`` gets a True once
    ``acompletion`` returned: an error after that came while iterating the stream."""
    kwargs.setdefault("timeout", TIMEOUT_S)
    response = await litellm.acompletion(
        model=model,
        api_base=base(srv, model),
        api_key="x",
        messages=[{"role": "user", "content": content}],
        max_retries=0,
        stream=stream,
        **kwargs,
    )
    if opened is not None:
        opened.append(True)
    if not stream:
        return response
    chunks = [] if received is None else received
    async for chunk in response:
        chunks.append(chunk)
    return chunks


def streamed_text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish(chunks: list[Any]) -> str | None:
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    return next((r for r in reversed(reasons) if r), None)


async def settled(srv: FakeOpenAIServer, count: int = 1) -> ServedCall:
    """Call ``count``, once its record has settled (a held request's is updated at its end)."""
    for _ in range(300):
        calls = srv.calls
        if len(calls) >= count:
            await asyncio.sleep(0.05)  # a record updated just after the client's error
            return srv.calls[count - 1]
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no call {count}")


def raises(runner: asyncio.Runner, kind: type[Exception], coro: Coroutine[Any, Any, Any]) -> Any:
    """The exception ``coro`` raises, which must be exactly of class ``kind``."""
    with pytest.raises(kind) as info:
        run(runner, coro)
    assert type(info.value) is kind, f"{type(info.value).__name__}: {info.value}"
    return info.value


# -- HTTP error statuses ------------------------------------------------------------------------


@BOTH
@STREAMED
@pytest.mark.parametrize(
    ("status", "openai_error", "anthropic_error"),
    [
        (400, exc.BadRequestError, exc.BadRequestError),
        (401, exc.AuthenticationError, exc.AuthenticationError),
        (403, exc.APIError, exc.PermissionDeniedError),  # OpenAI's 403 is a bare APIError
        (404, exc.NotFoundError, exc.NotFoundError),
        (429, exc.RateLimitError, exc.RateLimitError),
        (500, exc.InternalServerError, exc.InternalServerError),
        (502, exc.BadGatewayError, exc.BadGatewayError),
        (503, exc.ServiceUnavailableError, exc.ServiceUnavailableError),
        (504, exc.Timeout, exc.Timeout),
        (413, exc.APIError, exc.BadRequestError),  # Anthropic's as a 400
        (422, exc.BadRequestError, exc.BadRequestError),
        (529, exc.APIError, exc.InternalServerError),  # Anthropic's overloaded, as a 500
    ],
)
def test_status_fault(
    runner: asyncio.Runner,
    server: FakeOpenAIServer,
    model: str,
    stream: bool,
    status: int,
    openai_error: type[Exception],
    anthropic_error: type[Exception],
) -> None:
    server.faults = [Fault("status", status)]
    kind = openai_error if model == OPENAI else anthropic_error
    opened: list[bool] = []
    error = raises(runner, kind, ask(server, model, stream, opened=opened))
    assert opened == []  # a stream too fails in acompletion itself, before any chunk
    remapped = {413: 400, 529: 500} if model == ANTHROPIC else {}
    assert error.status_code == remapped.get(status, status)
    assert "fake fault: HTTP" in str(error)
    call = server.calls[-1]
    assert (call.status, call.fault, call.reply) == (status, "status", "")
    assert server.faults == []


@BOTH
@STREAMED
@pytest.mark.parametrize(
    ("status", "kind"), [(429, exc.RateLimitError), (503, exc.ServiceUnavailableError)]
)
def test_retry_after_is_on_litellm_response_headers(
    runner: asyncio.Runner,
    server: FakeOpenAIServer,
    model: str,
    stream: bool,
    status: int,
    kind: type[Exception],
) -> None:
    server.faults = [Fault("status", status, retry_after_s=5, headers=(("x-fake", "1"),))]
    error = raises(runner, kind, ask(server, model, stream))
    # The one path both APIs fill: an httpx.Headers (case-insensitive).
    assert error.litellm_response_headers["Retry-After"] == "5"
    assert error.litellm_response_headers["x-fake"] == "1"
    if model == OPENAI:
        assert error.response.headers["retry-after"] == "5"
    else:  # litellm's Anthropic path builds a response of its own, without the headers
        assert "retry-after" not in error.response.headers


# -- no answer: hang, close, stall -----------------------------------------------------------


@BOTH
@STREAMED
def test_hang_times_out(
    runner: asyncio.Runner, server: FakeOpenAIServer, model: str, stream: bool
) -> None:
    server.faults = [Fault("hang")]
    started = time.monotonic()
    error = raises(runner, exc.Timeout, ask(server, model, stream, timeout=HANG_TIMEOUT_S))
    assert HANG_TIMEOUT_S * 0.9 <= time.monotonic() - started < HANG_TIMEOUT_S + 1.5
    assert error.status_code == 408
    call = run(runner, settled(server))
    assert (call.status, call.fault, call.disconnected) == (0, "hang", True)


@BOTH
@STREAMED
def test_close_without_a_response(
    runner: asyncio.Runner, server: FakeOpenAIServer, model: str, stream: bool
) -> None:
    server.faults = [Fault("close")]
    # Not APIConnectionError: litellm maps a connection dropped by the server to a 500.
    error = raises(runner, exc.InternalServerError, ask(server, model, stream))
    assert ("Connection error" if model == OPENAI else "Server disconnected") in str(error)
    call = server.calls[-1]
    assert (call.status, call.fault, call.disconnected) == (0, "close", False)
    assert run(runner, ask(server, model, stream)) is not None  # the next request is served


@BOTH
def test_stall_of_a_whole_reply_times_out(
    runner: asyncio.Runner, server: FakeOpenAIServer, model: str
) -> None:
    server.faults = [Fault("stall_stream")]
    raises(runner, exc.Timeout, ask(server, model, timeout=HANG_TIMEOUT_S))
    call = run(runner, settled(server))
    assert (call.status, call.fault, call.disconnected) == (200, "stall_stream", True)


@BOTH
def test_stall_mid_stream(runner: asyncio.Runner, server: FakeOpenAIServer, model: str) -> None:
    server.faults = [Fault("stall_stream")]
    received: list[Any] = []
    opened: list[bool] = []
    coro = ask(server, model, True, received, timeout=HANG_TIMEOUT_S, opened=opened)
    if model == OPENAI:  # role chunk + 3 pieces of 8 characters, then the read timeout
        error = raises(runner, exc.Timeout, coro)
        assert streamed_text(received) == REPLY[:24]
    else:  # message_start, ping, content_block_start, 1 piece: litellm wraps the Timeout
        error = raises(runner, exc.MidStreamFallbackError, coro)
        assert type(error.original_exception) is exc.Timeout
        assert error.generated_content == streamed_text(received) == REPLY[:8]
    assert error.status_code == 408 and opened == [True]  # raised while iterating
    call = run(runner, settled(server))
    assert (call.fault, call.chunks_sent, call.disconnected) == ("stall_stream", 4, True)


@BOTH
def test_a_streams_timeout_is_per_read(runner: asyncio.Runner, model: str) -> None:
    # 10 pieces 0.15 s apart outlast a 0.4 s timeout, which each read restarts: no error.
    with FakeOpenAIServer(lambda body: "x" * 80, stream_delay_s=0.15) as srv:
        started = time.monotonic()
        chunks = run(runner, ask(srv, model, True, timeout=0.4))
    assert streamed_text(chunks) == "x" * 80 and time.monotonic() - started > 1.2


# -- a broken body --------------------------------------------------------------------------------


@BOTH
def test_malformed_body(runner: asyncio.Runner, server: FakeOpenAIServer, model: str) -> None:
    server.faults = [Fault("malformed")]
    if model == OPENAI:  # the OpenAI SDK's JSONDecodeError, as a 500
        raises(runner, exc.InternalServerError, ask(server, model))
    else:
        error = raises(runner, exc.APIConnectionError, ask(server, model))
        assert "Unable to get json response" in str(error)
    raw = httpx.post(
        base(server, model) + ("/chat/completions" if model == OPENAI else "/v1/messages"),
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        timeout=TIMEOUT_S,
    )
    assert raw.status_code == 200  # the fault list is empty again: a normal answer
    assert [c.fault for c in server.calls] == ["malformed", None]


@BOTH
def test_malformed_stream_event(
    runner: asyncio.Runner, server: FakeOpenAIServer, model: str
) -> None:
    server.faults = [Fault("malformed")]
    opened: list[bool] = []
    error = raises(runner, exc.MidStreamFallbackError, ask(server, model, True, opened=opened))
    assert type(error.original_exception) is exc.APIConnectionError
    assert isinstance(error, exc.ServiceUnavailableError)  # what MidStreamFallbackError is
    assert error.status_code == 500 and opened == [True]
    assert run(runner, settled(server)).fault == "malformed"


@BOTH
@STREAMED
@pytest.mark.parametrize(
    ("status", "kind"), [(None, exc.BadGatewayError), (503, exc.ServiceUnavailableError)]
)
def test_html_error_page(
    runner: asyncio.Runner,
    server: FakeOpenAIServer,
    model: str,
    stream: bool,
    status: int | None,
    kind: type[Exception],
) -> None:
    server.faults = [Fault("html", status)]
    error = raises(runner, kind, ask(server, model, stream))
    assert error.status_code == (status or 502)
    if model == ANTHROPIC:  # the page is in the message
        assert "<title>" in str(error)
    else:  # the OpenAI SDK drops a body that is not JSON
        assert f"Error code: {status or 502}" in str(error) and "<" not in str(error)
    call = server.calls[-1]
    assert (call.status, call.fault) == (status or 502, "html")
    page = httpx.post(server.base_url + "/chat/completions", json={"messages": []}, timeout=5)
    assert page.status_code == 200  # consumed: one fault, one request


# -- valid JSON, something missing ----------------------------------------------------------------


@BOTH
def test_empty_choices(runner: asyncio.Runner, server: FakeOpenAIServer, model: str) -> None:
    server.faults = [Fault("empty_choices")]
    response = run(runner, ask(server, model))
    if model == OPENAI:
        assert response.choices == []
    else:  # litellm turns an empty content list into one choice without content
        assert len(response.choices) == 1
        assert response.choices[0].message.content is None
        assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens == 0
    call = server.calls[-1]
    assert (call.fault, call.reply, call.completion_tokens) == ("empty_choices", "", 0)


@BOTH
def test_empty_choices_streamed(
    runner: asyncio.Runner, server: FakeOpenAIServer, model: str
) -> None:
    server.faults = [Fault("empty_choices")]
    options: dict[str, Any] = {"stream_options": {"include_usage": True}}
    if model == OPENAI:
        error = raises(runner, exc.MidStreamFallbackError, ask(server, model, True, **options))
        assert "Stream ended before a finish_reason was received" in str(error)
        assert type(error.original_exception) is exc.APIConnectionError
    else:
        chunks = run(runner, ask(server, model, True, **options))
        assert streamed_text(chunks) == "" and finish(chunks) == "stop"
        # message_start's output_tokens (1, as Anthropic starts) wins over message_delta's 0
        assert chunks[-1].usage.completion_tokens == 1


@BOTH
def test_no_usage(runner: asyncio.Runner, server: FakeOpenAIServer, model: str) -> None:
    server.faults = [Fault("no_usage")]
    if model == OPENAI:
        response = run(runner, ask(server, model))
        assert response.choices[0].message.content == REPLY
        usage = response.usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (0, 0, 0)
    else:  # litellm's Anthropic transformation reads response["usage"]: a KeyError
        error = raises(runner, exc.APIConnectionError, ask(server, model))
        assert "'usage'" in str(error)
    assert server.calls[-1].fault == "no_usage"


@BOTH
def test_no_usage_streamed_is_estimated_by_litellm(
    runner: asyncio.Runner, server: FakeOpenAIServer, model: str
) -> None:
    server.faults = [Fault("no_usage")]
    options: dict[str, Any] = {"stream_options": {"include_usage": True}}
    chunks = run(runner, ask(server, model, True, **options))
    assert streamed_text(chunks) == REPLY and finish(chunks) == "stop"
    # Not the server's 40: litellm counts the text with its own tokenizer instead.
    name = model.split("/", 1)[1]
    estimate = litellm.token_counter(model=name, text=REPLY, count_response_tokens=True)
    assert chunks[-1].usage.completion_tokens == estimate != 40
    call = run(runner, settled(server))
    assert (call.fault, call.completion_tokens) == ("no_usage", 40)
    if model == OPENAI:
        body = call.body
        assert body["stream_options"] == {"include_usage": True}  # asked for, not sent
