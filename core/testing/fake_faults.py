"""Faults for the fake provider server, as a real provider (or the proxy before it) serves them.

A ``Fault`` is served instead of (or in place of part of) a normal answer, so tests of
deadlines, retries and error handling can run through litellm's real provider code. Give the
server a list (``server.faults``, consumed one per request in arrival order) or a function
(``server.fault_for``); on the command line, ``--fault MODE[:STATUS][:KEY=VALUE]...``.

What litellm 1.110.2 makes of each, with ``max_retries=0`` (OpenAI: ``openai/gpt-4o-mini``
with ``api_base=server.base_url``, through the OpenAI SDK; Anthropic:
``anthropic/claude-3-5-haiku-20241022`` with ``api_base=server.anthropic_base_url``, through
litellm's own httpx handler), as tests/testing/test_fake_faults*.py pin it. Classes are
``litellm.exceptions.*``; "call" means ``await litellm.acompletion(...)`` raises (for a stream
too: before any chunk), "iter" that iterating the returned stream raises.

================== ============================================ ============================
fault              OpenAI (whole / stream)                      Anthropic (whole / stream)
================== ============================================ ============================
status 400, 422    BadRequestError, call                        same
status 401         AuthenticationError, call                    same
status 403         APIError (bare, status_code 403), call       PermissionDeniedError, call
status 404         NotFoundError, call                          same
status 413         APIError (status_code 413), call             BadRequestError (code 400)
status 429         RateLimitError, call                         same
status 500         InternalServerError, call                    same
status 502         BadGatewayError, call                        same
status 503         ServiceUnavailableError, call                same
status 504         Timeout (status_code 504), call              same
status 529         APIError (status_code 529), call             InternalServerError (500)
hang               Timeout (408) after ``timeout``, call        same
close              InternalServerError (500, "Connection        InternalServerError (500,
                   error."), call -- not APIConnectionError     "Server disconnected"), call
malformed          InternalServerError (500) / iter:            APIConnectionError ("Unable
                   MidStreamFallbackError (500),                to get json response") /
                   ``.original_exception`` APIConnectionError   iter: as OpenAI's
empty_choices      returns ``choices == []``, usage 0           returns 1 choice, content
                   completion tokens / iter:                    None, finish "stop", usage
                   MidStreamFallbackError ("Stream ended        0 / stream completes: no
                   before a finish_reason"), original           text, finish "stop",
                   APIConnectionError                           completion_tokens 1
html (502 / 503)   BadGatewayError / ServiceUnavailableError,   same; the page is in
                   call; message only "Error code: 502"         ``str(exc)``
no_usage           returns the reply, usage all 0 / stream      APIConnectionError (KeyError
                   completes; with ``include_usage`` the last   'usage'), call / stream as
                   chunk's usage is litellm's own estimate      OpenAI's (estimated usage)
                   (``litellm.token_counter``), not the
                   server's count
stall_stream       Timeout (408), call / iter: Timeout (408)    Timeout (408), call / iter:
                   after the chunks sent                        MidStreamFallbackError
                                                                (408), original Timeout,
                                                                ``.generated_content`` the
                                                                text so far
window_tokens      ContextWindowExceededError (400), call       same
max_tokens         returns ``finish_reason "length"``,          same (stop_reason
                   ``usage.completion_tokens == max_tokens``    "max_tokens" -> "length")
================== ============================================ ============================

Retry-After (and every response header) of an HTTP error: ``exc.litellm_response_headers``,
an ``httpx.Headers`` (case-insensitive), e.g. ``exc.litellm_response_headers["retry-after"]
== "5"``, for both APIs, streamed or not. ``exc.response.headers`` has it for OpenAI only
(Anthropic's ``exc.response`` is a response litellm makes up, without headers).

Class relations that matter when mapping: ``MidStreamFallbackError`` is a
``ServiceUnavailableError`` (its ``status_code`` is the wrapped error's: 500 or 408);
``Timeout`` is an ``openai.APITimeoutError`` (so an ``openai.APIConnectionError``) but not a
``litellm.APIConnectionError``; ``ContextWindowExceededError`` is a ``BadRequestError``; every
class here has ``status_code``. A stream's ``timeout`` is a per-read deadline (a stream that
keeps sending within it never times out).
"""

from __future__ import annotations

import asyncio
import http
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from aiohttp import web

from polyrlm.testing.fake_wire import Event, Outcome, ServedCall, SseStream, Wire, stream_out

FaultMode = Literal[
    "status", "hang", "close", "malformed", "empty_choices", "html", "no_usage", "stall_stream"
]
#: Every fault mode, in the order documented above.
FAULT_MODES: tuple[FaultMode, ...] = get_args(FaultMode)
#: The modes served before the responder runs: no reply is generated (the record's is "").
EARLY_MODES = frozenset({"status", "html", "hang", "close"})
#: The modes that spoil the delivery of a generated reply (the others change the reply).
LATE_MODES = frozenset({"malformed", "stall_stream"})

#: How often a held request (``hang``, ``stall_stream``) checks whether its client went away or
#: the server is stopping; it bounds how long a stop waits for it.
HOLD_POLL_S = 0.02
#: SSE events a ``stall_stream`` fault sends before it stalls, by default: OpenAI's role chunk
#: and 3 pieces of text; Anthropic's message_start, ping, content_block_start and 1 piece.
STALL_AFTER_EVENTS = 4
#: The status of an ``html`` fault unless it says otherwise: a proxy's 502.
HTML_DEFAULT_STATUS = 502

_PROXY_PAGE = (
    "<html>\r\n<head><title>{code} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class Fault:
    """One faulty answer. ``mode`` is one of:

    ``status``: HTTP ``status`` (required, 400-599) with the API's JSON error body;
    ``hang``: never answer (until the client disconnects or the server stops);
    ``close``: close the connection without a response;
    ``malformed``: 200 with a body cut in half (not JSON); streamed, one event's data cut;
    ``empty_choices``: 200, valid JSON, ``choices: []`` / ``content: []``;
    ``html``: a proxy's HTML error page (``status``, default 502, ``text/html``);
    ``no_usage``: a normal reply without usage (streamed: no usage chunk, Anthropic's
    ``message_start`` and ``message_delta`` without ``usage``);
    ``stall_stream``: send ``after_events`` SSE events (at most all but the last), then
    nothing more, keeping the connection open; not streamed: the headers (with the whole
    body's ``Content-Length``) and half the body.

    ``retry_after_s`` is sent as ``Retry-After`` and ``headers`` as more headers (``status`` and
    ``html``); ``message`` replaces the error message (``status``).
    """

    mode: FaultMode
    status: int | None = None
    retry_after_s: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    message: str = ""
    after_events: int = STALL_AFTER_EVENTS

    def __post_init__(self) -> None:
        if self.mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}; one of {', '.join(FAULT_MODES)}")
        if self.mode == "status" and self.status is None:
            raise ValueError("a status fault needs a status, e.g. Fault('status', 503)")
        if self.status is not None and self.mode not in ("status", "html"):
            raise ValueError(f"only status and html faults take a status, not {self.mode}")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"a fault's status is an HTTP error (400-599), not {self.status}")
        if self.after_events < 0:
            raise ValueError("after_events counts events sent: it cannot be negative")

    @property
    def http_status(self) -> int:
        """The status line sent (200 for the modes that answer with a body)."""
        if self.mode == "html":
            return self.status or HTML_DEFAULT_STATUS
        return self.status if self.status is not None else 200

    def response_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        if self.retry_after_s is not None:
            out["Retry-After"] = str(self.retry_after_s)
        return out

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """``MODE[:STATUS][:KEY=VALUE]...`` with keys ``retry-after`` (seconds), ``after``
        (events) and ``message`` (no colons): ``status:429:retry-after=5``, ``html:503``,
        ``hang``, ``stall_stream:after=2``."""
        mode, *parts = spec.strip().split(":")
        fields: dict[str, Any] = {}
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep and key.isdigit():
                fields["status"] = int(key)
            elif key in ("retry-after", "after") and value.isdigit():
                fields["retry_after_s" if key == "retry-after" else "after_events"] = int(value)
            elif key == "message" and sep:
                fields["message"] = value
            else:
                raise ValueError(f"fault {spec!r}: {part!r} is not STATUS, retry-after=S, ...")
        if mode not in FAULT_MODES:
            raise ValueError(f"fault {spec!r}: unknown mode; one of {', '.join(FAULT_MODES)}")
        return cls(mode, **fields)  # mypy narrows mode to a FaultMode from the check above

    def spec(self) -> str:
        """The ``parse`` form of this fault (for the command line)."""
        if self.headers or ":" in self.message:
            raise ValueError("headers and messages with colons have no command-line form")
        parts = [self.mode] + ([str(self.status)] if self.status is not None else [])
        if self.retry_after_s is not None:
            parts.append(f"retry-after={self.retry_after_s}")
        if self.after_events != STALL_AFTER_EVENTS:
            parts.append(f"after={self.after_events}")
        return ":".join(parts + ([f"message={self.message}"] if self.message else []))


def proxy_page(status: int, headers: dict[str, str]) -> web.Response:
    """An nginx-style HTML error page, as a proxy in front of a provider sends it."""
    phrase = http.HTTPStatus(status).phrase
    text = _PROXY_PAGE.format(code=status, phrase=phrase)
    return web.Response(status=status, text=text, content_type="text/html", headers=headers)


def broken_json(payload: dict[str, Any]) -> str:
    """The first half of the payload's JSON: a strict prefix of an object is never JSON."""
    text = json.dumps(payload)
    return text[: len(text) // 2]


def broken_events(events: Sequence[Event]) -> list[Event]:
    """The stream with the data of its first content event (else its first) cut in half."""
    out = list(events)
    at = next((i for i, (_, _, paced) in enumerate(out) if paced), 0)
    name, data, paced = out[at]
    out[at] = (name, data[: len(data) // 2], paced)
    return out


def abort(request: web.Request) -> None:
    """Drop the connection at once, without a response (what the client sees as a reset)."""
    if request.transport is not None:
        request.transport.abort()


async def hold(request: web.Request, stopping: threading.Event) -> bool:
    """Keep the request open without a word; True once the client went away, False once the
    server stops (the connection is then dropped, so the stop need not wait for it)."""
    while not stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return True
        await asyncio.sleep(HOLD_POLL_S)
    abort(request)
    return False


async def stall_body(
    request: web.Request, payload: dict[str, Any], stopping: threading.Event
) -> bool:
    """Send the headers and half of a JSON body, then hold; True if the client went away."""
    body = json.dumps(payload).encode()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    try:
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
    except ConnectionError:
        return True
    return await hold(request, stopping)


async def stall_events(
    stream: SseStream, events: Sequence[Event], after: int, stopping: threading.Event
) -> bool:
    """Send the first ``after`` events (never the last), then hold; True if the client left."""
    try:
        await stream.response.prepare(stream.request)
        for event in events[: min(after, len(events) - 1)]:
            await stream.send(event)
    except ConnectionError:
        return True
    return await hold(stream.request, stopping)


async def serve_early(
    request: web.Request,
    wire: Wire,
    fault: Fault,
    seen: ServedCall,
    track: Callable[[ServedCall], None],
    stopping: threading.Event,
) -> web.StreamResponse:
    """A fault served instead of any reply (``EARLY_MODES``), recorded through ``track``."""
    status, headers = fault.http_status, fault.response_headers()
    if fault.mode in ("status", "html"):
        track(replace(seen, status=status))
        if fault.mode == "html":
            return proxy_page(status, headers)
        return wire.error(status, fault.message or f"fake fault: HTTP {status}", headers)
    track(seen)  # status 0: no answer
    if fault.mode == "close":
        abort(request)
        return web.Response()  # never written: aiohttp drops it for the closed connection
    gone = False
    try:
        gone = await hold(request, stopping)
    finally:  # cancelled: by the stop, or (with handler_cancellation) because the client left
        track(replace(seen, disconnected=gone or not stopping.is_set()))
    abort(request)  # the client is gone or the server stops: nothing is to be written
    return web.Response()


async def serve_late(
    request: web.Request,
    wire: Wire,
    outcome: Outcome,
    fault: Fault,
    track: Callable[[ServedCall], None],
    stopping: threading.Event,
    delay_s: float,
) -> web.StreamResponse:
    """A generated reply delivered broken (``LATE_MODES``), recorded through ``track``."""
    call = outcome.call
    if not call.body.get("stream"):
        track(call)
        if fault.mode == "malformed":
            text = broken_json(wire.payload(outcome))
            return web.Response(text=text, content_type="application/json")
        gone = await stall_body(request, wire.payload(outcome), stopping)
        track(replace(call, disconnected=gone))
        abort(request)  # never finish the body
        return web.Response()
    if fault.mode == "malformed":
        return await stream_out(request, delay_s, broken_events(wire.events(outcome)), call, track)
    stream, gone = SseStream(request, delay_s), False
    track(call)
    try:
        gone = await stall_events(stream, wire.events(outcome), fault.after_events, stopping)
    finally:  # cancelled: by the stop, or (with handler_cancellation) because the client left
        track(replace(call, chunks_sent=stream.sent, disconnected=gone or not stopping.is_set()))
    abort(request)  # never end the stream properly: the client must not see it complete
    return stream.response
