"""Typed sub-calls: ``llm_query(prompt, schema=...)`` returns JSON data.

The schema (a JSON Schema; Python environments turn a pydantic model into
one) goes to the model through litellm's structured output where litellm's
map says the model takes a response schema; for every other model the
prompt asks for JSON of that schema. Either way the reply is validated on
the host, and a reply that does not validate is asked for once more, with
the errors; a second failure is the code's :class:`SubCallError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from polyrlm.answers import AnswerInvalid, AnswerType
from polyrlm.errors import ConfigError, SubCallError
from polyrlm.provider import LiteLLM

__all__ = ["SCHEMA_RETRIES", "SubSchema"]

#: Requests more, after the first, when a typed reply does not validate.
SCHEMA_RETRIES = 1

_ASK = (
    "\n\nReply with JSON only (no prose, no code fence) that validates against this "
    "JSON Schema:\n{schema}"
)
_AGAIN = (
    "That reply does not validate against the schema: {errors}. Reply again with JSON "
    "only that does."
)

Send = Callable[[list[dict[str, Any]], dict[str, Any]], Awaitable[str]]


class SubSchema:
    """The schema of one typed sub-call, checked when it is made."""

    def __init__(self, schema: Any) -> None:
        if not isinstance(schema, dict):
            raise SubCallError("schema must be a JSON Schema (an object)")
        try:
            self.type = AnswerType(schema)
        except ConfigError as exc:
            raise SubCallError(str(exc)) from None

    def options(self, provider: LiteLLM, model: str, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with litellm's ``response_format`` where the model takes one."""
        try:
            native = bool(provider.lm.supports_response_schema(model=model))
        except Exception:  # unmapped model
            native = False
        if not native or "response_format" in options:
            return options
        return {
            **options,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": self.type.schema},
            },
        }

    async def ask(self, prompt: str, send: Send, options: dict[str, Any]) -> Any:
        """The validated reply as JSON data; ``send(messages, options)`` makes one call."""
        native = "response_format" in options
        first = prompt if native else prompt + _ASK.format(schema=self.type.json_text())
        messages: list[dict[str, Any]] = [{"role": "user", "content": first}]
        problem = ""
        for _ in range(1 + SCHEMA_RETRIES):
            text = await send(messages, options)
            try:
                return self.type.validate(text)
            except AnswerInvalid as exc:
                problem = str(exc)
            messages = [
                *messages,
                {"role": "assistant", "content": text},
                {"role": "user", "content": _AGAIN.format(errors=problem)},
            ]
        raise SubCallError(f"the sub-model's reply does not validate against the schema: {problem}")
