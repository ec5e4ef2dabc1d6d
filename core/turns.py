"""The root conversation's messages: a reply as the assistant's message
(with its native tool calls), a tool call's result, the code argument of a
run_code call, and the cache marks of the stable prefix."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from polyrlm.parsing import format_exec_observation
from polyrlm.prompts import RUN_CODE_TOOL
from polyrlm.provider import Reply
from polyrlm.records import ExecResult

__all__ = [
    "CACHE_MARK",
    "assistant_entry",
    "assistant_message",
    "cache_marked",
    "observation",
    "run_code_argument",
    "tool_result",
]

#: The prompt-cache breakpoint (Anthropic's ``cache_control``; litellm passes
#: it on to the providers that take it).
CACHE_MARK = {"type": "ephemeral"}


def assistant_message(reply: Reply) -> dict[str, Any]:
    """The reply as it goes into the history (OpenAI's format; litellm
    translates it for each provider)."""
    return assistant_entry(reply.text, reply.tool_calls)


def assistant_entry(text: str, tool_calls: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """An assistant message of ``text`` and its native tool calls (id,
    name, arguments), as the loop puts it in the history."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": call["arguments"]},
            }
            for call in tool_calls
        ]
    return message


def tool_result(call: dict[str, str], content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call["id"], "content": content}


def run_code_argument(call: dict[str, str]) -> tuple[str | None, str]:
    """The code of a run_code call, or None and what is wrong with the call
    (told to the model as the tool's result)."""
    if call["name"] != RUN_CODE_TOOL:
        return None, f"There is no tool named {call['name']!r}; call {RUN_CODE_TOOL}(code)."
    try:
        args = json.loads(call["arguments"] or "{}")
    except ValueError as exc:
        return None, f"The arguments of {RUN_CODE_TOOL} are not JSON ({exc}); nothing ran."
    code = args.get("code") if isinstance(args, dict) else None
    if not isinstance(code, str) or not code.strip():
        return None, f"{RUN_CODE_TOOL} needs a non-empty string argument 'code'; nothing ran."
    return code, ""


def _marked(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, str) or not content:
        return message
    return {**message, "content": [{"type": "text", "text": content, "cache_control": CACHE_MARK}]}


def cache_marked(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy with cache breakpoints on the system prompt (instructions, guide
    and metadata: the same every turn) and on the newest message, so each turn
    reads the whole earlier conversation from the provider's cache. The
    history itself only grows (append-only), which is what makes it hit."""
    if not messages:
        return messages
    marked = list(messages)
    marked[0] = _marked(marked[0])
    if len(marked) > 1:
        marked[-1] = _marked(marked[-1])
    return marked


def observation(result: ExecResult, max_chars: int) -> str:
    """What the model is shown of one execution: its output and error (head
    and tail kept within ``max_chars``), and notes on what was dropped or lost."""
    shown, _ = format_exec_observation(result.output, result.error, max_chars)
    if result.truncated_chars:
        shown += f"\n[{result.truncated_chars} more characters of output were dropped]"
    if result.restarted:
        shown += (
            "\n[The environment was restarted: every variable you made is lost; "
            "the context is loaded again.]"
        )
    return shown
