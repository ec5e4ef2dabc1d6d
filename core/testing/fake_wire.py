"""What the fake provider servers share: replies, records, token counts, prompt cache, SSE.

The wire formats themselves live in ``fake_openai`` and ``fake_anthropic``; the server that
routes requests to them is ``fake_server``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from aiohttp import web

#: A streamed text (and a tool call's JSON arguments) is sent in pieces of at most this many
#: characters, one SSE event each.
STREAM_CHUNK_CHARS = 8

#: OpenAI caches prompt prefixes automatically from 1024 tokens on; the fake does it from this
#: many (word-count) tokens on, so tests can use short prompts.
OPENAI_CACHE_MIN_TOKENS = 16


@dataclass(frozen=True)
class FakeToolCall:
    """A tool call in a reply; the server fills an empty ``id`` (``call_1``, ``toolu_2``)."""

    name: str
    arguments: dict[str, Any]
    id: str = ""


@dataclass(frozen=True)
class FakeReply:
    """What a responder may return instead of a plain ``str``: text and/or tool calls."""

    text: str = ""
    tool_calls: tuple[FakeToolCall, ...] = ()


#: A function of the request body (``body["messages"]`` holds OpenAI-style messages for both
#: APIs) returning the reply's text or a ``FakeReply``.
Responder = Callable[[dict[str, Any]], str | FakeReply]


@dataclass(frozen=True)
class ServedCall:
    """One request the server answered, for tests to inspect.

    ``messages`` are OpenAI-style (an Anthropic request's are normalised, its ``system`` first);
    ``body`` is the raw JSON request body and ``headers`` its headers with lower-cased names.
    ``reply`` and ``tool_calls`` are what was sent (a stop sequence cuts the text and drops the
    tool calls: generation ended there). ``prompt_tokens`` is
    the whole prompt, cached part included; ``cached_tokens`` the part read from the simulated
    prompt cache and ``cache_creation_tokens`` the part written to it (Anthropic only). For a
    stream, ``chunks_sent`` counts the SSE events written (the final ``[DONE]`` or
    ``message_stop`` included) and ``disconnected`` says the client went away before the end
    (also of a ``hang`` or ``stall_stream`` fault). ``fault`` names the fault served (a
    ``Fault.mode``; None: none); ``truncated`` says the request's ``max_tokens`` cut the reply;
    ``overreported_tokens`` is how many completion tokens the usage block claimed beyond
    ``completion_tokens`` (the server's ``usage_factor`` / ``extra_usage_tokens``).
    """

    model: str
    messages: list[dict[str, Any]]
    reply: str
    prompt_tokens: int
    completion_tokens: int
    status: int
    path: str = ""
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    tool_calls: tuple[FakeToolCall, ...] = ()
    chunks_sent: int = 0
    disconnected: bool = False
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    fault: str | None = None
    truncated: bool = False
    overreported_tokens: int = 0


#: One SSE event: its ``event:`` name (None: no such line), its ``data:``, and whether it is
#: paced (``stream_delay_s`` before it): those that carry generated content or start a block.
Event = tuple[str | None, str, bool]


@dataclass(frozen=True)
class Outcome:
    """A successful answer, ready to be written in one wire format or the other."""

    call: ServedCall
    id: str
    created: int
    stop_sequence: str | None  # the stop string that cut the text, if any

    @property
    def usage(self) -> bool:
        """Whether the reply carries a usage block (not under the ``no_usage`` fault)."""
        return self.call.fault != "no_usage"

    @property
    def empty(self) -> bool:
        """No choices (OpenAI) / no content blocks (Anthropic): the ``empty_choices`` fault."""
        return self.call.fault == "empty_choices"

    @property
    def reported_completion_tokens(self) -> int:
        """What the usage block says was generated (more than that if the server lies)."""
        return self.call.completion_tokens + self.call.overreported_tokens


class Wire(Protocol):
    """One API's request checks, responder view, cache accounting and response shapes."""

    id_prefix: str  # of a response's id
    tool_id_prefix: str  # of the ids the server gives tool calls

    def invalid(self, body: Any) -> str | None: ...
    def view(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def stops(self, body: dict[str, Any]) -> Any: ...
    def limit(self, body: dict[str, Any]) -> int | None: ...  # max_tokens of a valid request
    def account(self, model: str, body: dict[str, Any], messages: list[Any]) -> tuple[int, int]: ...
    def error(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response: ...
    def too_long(self, prompt: int, window: int) -> web.Response: ...
    def payload(self, outcome: Outcome) -> dict[str, Any]: ...
    def events(self, outcome: Outcome) -> list[Event]: ...


def content_text(content: Any) -> str:
    """A string, or the text parts of a list of parts (OpenAI parts or Anthropic text blocks)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict) and "text" in p)


def echo_responder(body: dict[str, Any]) -> str:
    """Default responder: ``"echo: "`` + the content of the last message."""
    messages = body.get("messages") or [{}]
    return "echo: " + content_text(messages[-1].get("content"))


def as_reply(value: object) -> FakeReply:
    if isinstance(value, FakeReply):
        return value
    if isinstance(value, str):
        return FakeReply(value)
    raise TypeError(f"a responder returns a str or a FakeReply, not {type(value).__name__}")


def apply_stop(text: str, stop: Any) -> tuple[str, str | None]:
    """Cut at the earliest occurrence of any stop string, which is dropped; returns the string."""
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    hits = [(i, s) for s in stops if isinstance(s, str) and s if (i := text.find(s)) >= 0]
    if not hits:
        return text, None
    at, hit = min(hits, key=lambda h: h[0])
    return text[:at], hit


def _words(text: str) -> int:
    return len(text.split())


def tool_call_tokens(name: str, arguments_json: str) -> int:
    """A tool call counts 1 for its name + the words of its JSON arguments."""
    return 1 + _words(arguments_json)


def message_tokens(message: dict[str, Any]) -> int:
    """Words of the content (+ of any OpenAI-style tool calls it carries) + 3."""
    tokens = _words(content_text(message.get("content"))) + 3
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            tokens += tool_call_tokens(str(function.get("name")), str(function.get("arguments")))
    return tokens


def prompt_tokens(messages: Iterable[dict[str, Any]]) -> int:
    return sum(message_tokens(m) for m in messages)


def completion_tokens(text: str, tool_calls: Sequence[FakeToolCall]) -> int:
    """At least 1: the words of the text + what each tool call counts."""
    calls = sum(tool_call_tokens(c.name, json.dumps(c.arguments)) for c in tool_calls)
    return max(1, _words(text) + calls)


def truncate(
    text: str, tools: Sequence[FakeToolCall], limit: int
) -> tuple[str, tuple[FakeToolCall, ...], bool]:
    """The reply cut to ``limit`` (>= 1) completion tokens by ``completion_tokens``'s rule, and
    whether it was cut: the text to its first ``limit`` words, then whole tool calls while they
    fit (generation ran out inside the first that does not, so it and the rest are dropped)."""
    parts = text.split(maxsplit=limit)
    if len(parts) > limit:  # parts[limit] is the untouched rest, from word limit + 1 on
        return text[: len(text) - len(parts[limit])].rstrip(), (), True
    left, kept = limit - len(parts), list[FakeToolCall]()
    for call in tools:
        left -= tool_call_tokens(call.name, json.dumps(call.arguments))
        if left < 0:
            return text, tuple(kept), True
        kept.append(call)
    return text, tuple(kept), False


def pieces(text: str, size: int = STREAM_CHUNK_CHARS) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class PrefixCache:
    """Prompt prefixes seen so far (per model), as chained hashes of their units -> tokens."""

    def __init__(self) -> None:
        self._tokens: dict[bytes, int] = {}

    @staticmethod
    def chain(model: str, units: Iterable[Any]) -> list[bytes]:
        """``chain(...)[i]`` identifies the prefix made of the first ``i + 1`` units."""
        digest, out = hashlib.sha256(model.encode()).digest(), []
        for unit in units:
            text = json.dumps(unit, sort_keys=True, separators=(",", ":"), default=str)
            digest = hashlib.sha256(digest + text.encode()).digest()
            out.append(digest)
        return out

    def get(self, key: bytes) -> int | None:
        return self._tokens.get(key)

    def put(self, key: bytes, tokens: int) -> None:
        self._tokens.setdefault(key, tokens)


class SseStream:
    """Writes SSE events one by one (each its own chunk), noticing a client that went away.

    The opening and closing events go out back to back, as a provider sends them; only paced
    events wait ``delay_s`` first.

    ``on_last`` runs just before the final event is written, so a test that has read the whole
    stream already finds its record; ``finished`` says that final event was written.
    """

    def __init__(self, request: web.Request, delay_s: float) -> None:
        self.request = request
        self.delay_s = delay_s
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        self.sent = 0
        self.finished = False

    async def send(self, event: Event) -> None:
        """Write one event (after ``delay_s`` if it is paced); raises ConnectionError if the
        client is gone."""
        name, data, paced = event
        if paced and self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        frame = (f"event: {name}\n" if name else "") + f"data: {data}\n\n"
        await self.response.write(frame.encode())
        self.sent += 1
        await asyncio.sleep(0)  # let the loop flush it (and see a closed connection)

    async def run(self, events: Sequence[Event], on_last: Callable[[], None]) -> None:
        """Send every event; a client that disconnects ends the stream quietly."""
        try:
            await self.response.prepare(self.request)
            for number, (name, data, paced) in enumerate(events, 1):
                if paced and self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                if number == len(events):
                    on_last()
                await self.send((name, data, False))
            self.finished = True
            await self.response.write_eof()
        except ConnectionError:  # aiohttp's ClientConnectionResetError: the client is gone
            pass


async def stream_out(
    request: web.Request,
    delay_s: float,
    events: Sequence[Event],
    call: ServedCall,
    track: Callable[[ServedCall], None],
) -> web.StreamResponse:
    """Stream the events, recording the call through ``track`` once and again if it breaks
    off (with how many events went out and whether the client left first)."""
    stream = SseStream(request, delay_s)

    def settle(complete: bool) -> None:
        sent = stream.sent + complete  # complete: counted before the last write
        track(replace(call, chunks_sent=sent, disconnected=not complete))

    try:
        await stream.run(events, on_last=lambda: settle(True))
    finally:  # also when cancelled: the record says how far it got
        if not stream.finished:
            settle(False)
    return stream.response
