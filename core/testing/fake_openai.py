"""OpenAI's chat-completions wire format for the fake server (``POST /v1/chat/completions``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from polyrlm.testing.fake_wire import (
    OPENAI_CACHE_MIN_TOKENS,
    Event,
    FakeToolCall,
    Outcome,
    PrefixCache,
    message_tokens,
    pieces,
)

_ERROR_TYPES = {401: "authentication_error", 429: "rate_limit_error"}
#: The request options that cap the reply's length (OpenAI's old and new names).
LIMIT_OPTIONS = ("max_tokens", "max_completion_tokens")


def _tool_call(call: FakeToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": json.dumps(call.arguments)}
    return {"id": call.id, "type": "function", "function": function}


class OpenAIWire:
    """Chat completions as OpenAI sends them, with automatic prefix caching.

    Caching: a request's longest run of leading messages (never the last one) that starts an
    earlier request to the same model, if it counts at least ``OPENAI_CACHE_MIN_TOKENS``
    tokens, is reported as ``usage.prompt_tokens_details.cached_tokens`` (``prompt_tokens``
    stays the total, as OpenAI reports it).
    """

    id_prefix = "chatcmpl-fake-"
    tool_id_prefix = "call_"

    def __init__(self) -> None:
        self._cache = PrefixCache()

    def invalid(self, body: Any) -> str | None:
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return "body must be an object with a 'messages' list"
        for option in LIMIT_OPTIONS:
            limit = body.get(option)
            if limit is not None and (type(limit) is not int or limit < 1):
                return (
                    f"Invalid '{option}': integer below minimum value. "
                    f"Expected a value >= 1, but got {limit!r} instead."
                )
        return None

    def limit(self, body: dict[str, Any]) -> int | None:
        """The smallest reply cap the request gives, if any."""
        return min((body[o] for o in LIMIT_OPTIONS if body.get(o) is not None), default=None)

    def view(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def stops(self, body: dict[str, Any]) -> Any:
        return body.get("stop")

    def account(self, model: str, body: dict[str, Any], messages: list[Any]) -> tuple[int, int]:
        keys = PrefixCache.chain(model, messages)
        totals, running = [], 0
        for message in messages:
            running += message_tokens(message)
            totals.append(running)
        cached = 0
        for i in range(len(messages) - 2, -1, -1):  # the longest prefix short of the last message
            if totals[i] >= OPENAI_CACHE_MIN_TOKENS and self._cache.get(keys[i]) is not None:
                cached = totals[i]
                break
        for key, total in zip(keys, totals, strict=True):
            self._cache.put(key, total)
        return cached, 0

    def error(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        default = "server_error" if status >= 500 else "invalid_request_error"
        kind = _ERROR_TYPES.get(status, default)
        body = {"error": {"message": message, "type": kind, "code": str(status)}}
        text = json.dumps(body)
        return web.Response(
            status=status, text=text, content_type="application/json", headers=headers
        )

    def too_long(self, prompt: int, window: int) -> web.Response:
        """OpenAI's 400 for a prompt beyond the context window, as it words it."""
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {prompt} tokens. Please reduce the length of the messages."
        )
        error = {"message": message, "type": "invalid_request_error", "param": "messages"}
        body = {"error": {**error, "code": "context_length_exceeded"}}
        return web.Response(status=400, text=json.dumps(body), content_type="application/json")

    @staticmethod
    def _usage(outcome: Outcome) -> dict[str, Any]:
        call = outcome.call
        usage: dict[str, Any] = {"prompt_tokens": call.prompt_tokens}
        usage["completion_tokens"] = outcome.reported_completion_tokens
        usage["total_tokens"] = call.prompt_tokens + outcome.reported_completion_tokens
        if call.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": call.cached_tokens}
        return usage

    @staticmethod
    def _head(outcome: Outcome, kind: str) -> dict[str, Any]:
        return {"id": outcome.id, "object": kind, "created": outcome.created}

    @staticmethod
    def _finish(outcome: Outcome) -> str:
        if outcome.call.truncated:
            return "length"
        return "tool_calls" if outcome.call.tool_calls else "stop"

    def payload(self, outcome: Outcome) -> dict[str, Any]:
        call = outcome.call
        message: dict[str, Any] = {"role": "assistant", "content": call.reply}
        if call.tool_calls:
            message["content"] = call.reply or None  # OpenAI sends null beside tool calls
            message["tool_calls"] = [_tool_call(c) for c in call.tool_calls]
        choice = {"index": 0, "message": message, "finish_reason": self._finish(outcome)}
        head = {**self._head(outcome, "chat.completion"), "model": call.model}
        payload = {**head, "choices": [] if outcome.empty else [choice]}
        return {**payload, "usage": self._usage(outcome)} if outcome.usage else payload

    def events(self, outcome: Outcome) -> list[Event]:
        call = outcome.call
        options = call.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        include_usage &= outcome.usage
        head = {**self._head(outcome, "chat.completion.chunk"), "model": call.model}
        if include_usage:
            head["usage"] = None  # OpenAI sends a null usage on every chunk but the last

        def chunk(delta: dict[str, Any], finish: str | None = None, paced: bool = True) -> Event:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return None, json.dumps({**head, "choices": [choice]}), paced

        first: dict[str, Any] = {"role": "assistant", "content": "" if call.reply else None}
        events: list[Event] = [chunk(first, paced=False)]
        events += [chunk({"content": piece}) for piece in pieces(call.reply)]
        for index, tool in enumerate(call.tool_calls):
            function = {"name": tool.name, "arguments": ""}
            opening = {"index": index, "id": tool.id, "type": "function", "function": function}
            events.append(chunk({"tool_calls": [opening]}))
            for piece in pieces(json.dumps(tool.arguments)):
                fragment = {"index": index, "function": {"arguments": piece}}
                events.append(chunk({"tool_calls": [fragment]}))
        events.append(chunk({}, self._finish(outcome), paced=False))
        if outcome.empty:  # every chunk without choices
            events = [(None, json.dumps({**head, "choices": []}), False)]
        if include_usage:
            last = {**head, "choices": [], "usage": self._usage(outcome)}
            events.append((None, json.dumps(last), False))
        events.append((None, "[DONE]", False))
        return events
