"""Anthropic's Messages API wire format for the fake server (``POST /v1/messages``).

Responders see OpenAI-style messages: ``system`` first as a system message, text blocks joined
into ``content``, ``tool_use`` blocks as the assistant's ``tool_calls`` and each ``tool_result``
as a ``{"role": "tool", "tool_call_id": ..., "content": ...}`` message, so a conversation that
litellm translates from OpenAI's format reads (and counts) the same as it would over OpenAI's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from polyrlm.testing.fake_wire import (
    Event,
    Outcome,
    PrefixCache,
    content_text,
    pieces,
    prompt_tokens,
)

#: Anthropic's error ``type`` for each HTTP status; other 5xx are ``api_error``.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _blocks(content: Any) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _message(role: str, content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    out: list[dict[str, Any]] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            function = {"name": block.get("name", ""), "arguments": json.dumps(block.get("input"))}
            calls.append({"id": block.get("id", ""), "type": "function", "function": function})
        elif kind == "tool_result":
            if texts and role != "assistant":  # keep the order of texts and results
                out.append({"role": role, "content": " ".join(texts)})
                texts = []
            result = content_text(block.get("content", ""))
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id", "")})
            out[-1]["content"] = result
    if texts or calls or not out:
        message: dict[str, Any] = {"role": role, "content": " ".join(texts)}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def normalise(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The OpenAI-style messages of a (valid) Messages API request."""
    system = body.get("system")
    out = [{"role": "system", "content": content_text(system)}] if system else []
    for m in body["messages"]:
        out += _message(str(m["role"]), m["content"])
    return out


def _invalid_message(i: int, m: Any) -> str | None:
    if not isinstance(m, dict):
        return f"messages.{i}: Input should be a valid dictionary"
    if m.get("role") not in ("user", "assistant"):
        return f"messages.{i}.role: Input should be 'user' or 'assistant'"
    content = m.get("content")
    if isinstance(content, str):
        return None
    if isinstance(content, list) and all(isinstance(b, dict) and "type" in b for b in content):
        return None
    return f"messages.{i}.content: Input should be a string or a list of blocks"


class AnthropicWire:
    """Messages API responses and SSE events, with ``cache_control`` prompt caching.

    Caching: the prompt is a sequence of blocks in Anthropic's order (tools, system blocks,
    message blocks). The prefix ending at the last block that carries ``cache_control`` is
    cached per model. The longest cached prefix a request starts with is reported as
    ``cache_read_input_tokens``; if its own prefix was not cached yet, the tokens beyond the hit
    up to its last breakpoint are ``cache_creation_input_tokens``; ``input_tokens`` is the
    rest. A prefix's tokens are those of the prompt cut after that block (tools count 0).
    """

    id_prefix = "msg_fake_"
    tool_id_prefix = "toolu_"

    def __init__(self) -> None:
        self._cache = PrefixCache()

    def invalid(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "body: Input should be a valid dictionary"
        if not isinstance(body.get("model"), str):
            return "model: Field required"
        tokens = body.get("max_tokens")
        if tokens is None:
            return "max_tokens: Field required"
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            return "max_tokens: Input should be an integer greater than or equal to 1"
        messages = body.get("messages")
        if not isinstance(messages, list):
            return "messages: Field required"
        if not messages:
            return "messages: at least one message is required"
        system = body.get("system")
        if system is not None and not isinstance(system, str | list):
            return "system: Input should be a valid string or a list of text blocks"
        if not isinstance(body.get("tools", []), list):
            return "tools: Input should be a valid list"
        return next((p for i, m in enumerate(messages) if (p := _invalid_message(i, m))), None)

    def view(self, body: dict[str, Any]) -> dict[str, Any]:
        view = {k: v for k, v in body.items() if k != "system"}
        view["messages"] = normalise(body)
        return view

    def stops(self, body: dict[str, Any]) -> Any:
        return body.get("stop_sequences")

    def limit(self, body: dict[str, Any]) -> int | None:
        return int(body["max_tokens"])  # required, checked by invalid()

    def account(self, model: str, body: dict[str, Any], messages: list[Any]) -> tuple[int, int]:
        units, ends = _units(body)
        marks = [i for i, (_, marked) in enumerate(units) if marked]
        if not marks:
            return 0, 0
        keys = PrefixCache.chain(model, [unit for unit, _ in units])
        hits = (self._cache.get(keys[i]) for i in range(marks[-1], -1, -1))
        read = next((t for t in hits if t is not None), 0)  # the longest cached prefix
        tokens = {i: prompt_tokens(normalise(_cut(body, ends[i]))) for i in marks}
        for i in marks:
            self._cache.put(keys[i], tokens[i])
        return read, max(0, tokens[marks[-1]] - read)

    def error(
        self, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
        text = json.dumps(body)
        return web.Response(
            status=status, text=text, content_type="application/json", headers=headers
        )

    def too_long(self, prompt: int, window: int) -> web.Response:
        """Anthropic's 400 for a prompt beyond the context window, as it words it."""
        return self.error(400, f"prompt is too long: {prompt} tokens > {window} maximum")

    @staticmethod
    def _usage(outcome: Outcome) -> dict[str, int]:
        call = outcome.call
        fresh = call.prompt_tokens - call.cached_tokens - call.cache_creation_tokens
        return {
            "input_tokens": fresh,
            "cache_creation_input_tokens": call.cache_creation_tokens,
            "cache_read_input_tokens": call.cached_tokens,
            "output_tokens": outcome.reported_completion_tokens,
        }

    @staticmethod
    def _stop_reason(outcome: Outcome) -> str:
        if outcome.call.truncated:
            return "max_tokens"
        if outcome.stop_sequence is not None:
            return "stop_sequence"
        return "tool_use" if outcome.call.tool_calls else "end_turn"

    @staticmethod
    def _message(outcome: Outcome, content: list[Any], usage: dict[str, int]) -> dict[str, Any]:
        message = {
            "id": outcome.id,
            "type": "message",
            "role": "assistant",
            "model": outcome.call.model,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        if not outcome.usage:
            del message["usage"]
        return message

    @staticmethod
    def _text_block(outcome: Outcome) -> bool:
        """A text block is sent if there is text, or nothing else (but never when empty)."""
        return not outcome.empty and (bool(outcome.call.reply) or not outcome.call.tool_calls)

    def payload(self, outcome: Outcome) -> dict[str, Any]:
        call = outcome.call
        content: list[dict[str, Any]] = []
        if self._text_block(outcome):
            content.append({"type": "text", "text": call.reply})
        for tool in call.tool_calls:
            content.append({"type": "tool_use", "id": tool.id, "name": tool.name})
            content[-1]["input"] = tool.arguments
        message = self._message(outcome, content, self._usage(outcome))
        message["stop_reason"] = self._stop_reason(outcome)
        message["stop_sequence"] = outcome.stop_sequence
        return message

    def events(self, outcome: Outcome) -> list[Event]:
        call = outcome.call
        events: list[Event] = []

        def emit(kind: str, **data: Any) -> None:
            paced = kind in ("content_block_start", "content_block_delta")
            events.append((kind, json.dumps({"type": kind, **data}), paced))

        start_usage = {**self._usage(outcome), "output_tokens": 1}  # as Anthropic starts
        emit("message_start", message=self._message(outcome, [], start_usage))
        emit("ping")
        index = 0
        if self._text_block(outcome):
            emit("content_block_start", index=index, content_block={"type": "text", "text": ""})
            for piece in pieces(call.reply):
                delta = {"type": "text_delta", "text": piece}
                emit("content_block_delta", index=index, delta=delta)
            emit("content_block_stop", index=index)
            index += 1
        for tool in call.tool_calls:
            block = {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}}
            emit("content_block_start", index=index, content_block=block)
            for piece in pieces(json.dumps(tool.arguments)):
                delta = {"type": "input_json_delta", "partial_json": piece}
                emit("content_block_delta", index=index, delta=delta)
            emit("content_block_stop", index=index)
            index += 1
        stop = {"stop_reason": self._stop_reason(outcome), "stop_sequence": outcome.stop_sequence}
        usage = {"output_tokens": outcome.reported_completion_tokens}
        emit("message_delta", delta=stop, **({"usage": usage} if outcome.usage else {}))
        emit("message_stop")
        return events


_End = tuple[int, int, int]


def _units(body: dict[str, Any]) -> tuple[list[tuple[Any, bool]], list[_End]]:
    """The prompt's blocks in cache order, each as (identity, carries cache_control), and where
    each ends: (system blocks kept, whole messages kept, blocks kept of the next message)."""
    units: list[tuple[Any, bool]] = []
    ends: list[_End] = []

    def add(identity: list[Any], block: Any, end: _End) -> None:
        marked = isinstance(block, dict) and "cache_control" in block
        if isinstance(block, dict):
            block = {k: v for k, v in block.items() if k != "cache_control"}
        units.append(([*identity, block], marked))
        ends.append(end)

    for tool in body.get("tools") or []:
        add(["tool"], tool, (0, 0, 0))
    system = _blocks(body.get("system") or [])
    for i, block in enumerate(system):
        add(["system"], block, (i + 1, 0, 0))
    for m, message in enumerate(body["messages"]):
        for b, block in enumerate(_blocks(message["content"])):
            add(["message", m, message["role"], b], block, (len(system), m, b + 1))
    return units, ends


def _cut(body: dict[str, Any], end: _End) -> dict[str, Any]:
    """The request cut just after one of its blocks (an ``end`` from ``_units``)."""
    system_kept, messages_kept, blocks_kept = end
    messages = list(body["messages"][:messages_kept])
    if blocks_kept:
        last = body["messages"][messages_kept]
        messages.append({**last, "content": _blocks(last["content"])[:blocks_kept]})
    return {"system": _blocks(body.get("system") or [])[:system_kept], "messages": messages}
