"""A scripted model served through litellm, for tests without a provider.

It is a real litellm custom provider (``polyrlm-scripted/<name>``), so every
call still goes through ``litellm.acompletion`` and the broker, exactly as a
hosted model's would. Replies come from a list (in order) or a function of
the messages; usage is counted in words, so tests can check it by hand.
Like a real provider it honours ``max_tokens`` (the reply is cut to that
many words).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from polyrlm.provider import litellm_module, message_text

__all__ = ["PROVIDER", "STREAM_CHUNK_CHARS", "ScriptedModel", "word_tokens"]

#: litellm provider name under which scripted models are served.
PROVIDER = "polyrlm-scripted"
#: Characters per streamed piece of a reply (root calls are streamed).
STREAM_CHUNK_CHARS = 16

Reply = str | Callable[[list[dict[str, Any]]], str]

_models: dict[str, ScriptedModel] = {}
_names = itertools.count(1)
_lock = threading.Lock()


def word_tokens(text: str) -> int:
    """The scripted model's (and the fake server's) token count: words."""
    return len(text.split())


def _cut_at_stop(text: str, stop: Any) -> str:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cuts = [text.find(s) for s in stops if s and s in text]
    return text[: min(cuts)] if cuts else text


class ScriptedModel:
    """Replies from ``replies`` (a list used in order, or a function of the
    messages). Pass ``scripted.model`` as the model name to :class:`RLM`.

    ``latency_s`` delays each reply (asynchronously); ``fail_first`` makes
    the first calls raise a rate-limit error (to exercise retries).
    """

    def __init__(
        self,
        replies: Sequence[str] | Callable[[list[dict[str, Any]]], str],
        *,
        name: str | None = None,
        latency_s: float = 0.0,
        fail_first: int = 0,
    ) -> None:
        self.name = name or f"m{next(_names)}"
        self._replies = replies if callable(replies) else list(replies)
        self._next = 0
        self.latency_s = latency_s
        self.fail_first = fail_first
        #: The messages of every call received, in order.
        self.calls: list[list[dict[str, Any]]] = []
        #: Per streamed call: [pieces the client took, pieces in the reply].
        self.streams: list[list[int]] = []
        _install()
        with _lock:
            _models[self.name] = self

    @property
    def model(self) -> str:
        """The litellm model name that reaches this script."""
        return f"{PROVIDER}/{self.name}"

    def reply(self, messages: list[dict[str, Any]]) -> str:
        with _lock:
            self.calls.append(messages)
            if self.fail_first > 0:
                self.fail_first -= 1
                lm = litellm_module()
                raise lm.RateLimitError("scripted rate limit", PROVIDER, self.name)
            if callable(self._replies):
                return self._replies(messages)
            if self._next >= len(self._replies):
                raise RuntimeError(
                    f"scripted model {self.name!r} has no reply left "
                    f"({len(self._replies)} were given)"
                )
            self._next += 1
            return self._replies[self._next - 1]

    async def _answer(
        self, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> tuple[str, int, int]:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        lm = litellm_module()
        try:
            text = _cut_at_stop(self.reply(messages), options.get("stop"))
        except lm.RateLimitError:
            raise
        except Exception as exc:  # a script's own error is the request's fault: no retry
            raise lm.BadRequestError(f"{type(exc).__name__}: {exc}", self.model, PROVIDER) from exc
        cap = options.get("max_tokens") or options.get("max_completion_tokens")
        if isinstance(cap, int) and word_tokens(text) > cap:  # as a provider does: cut there
            text = " ".join(text.split()[:cap])
        prompt = sum(word_tokens(message_text(m)) + 3 for m in messages)
        return text, prompt, max(1, word_tokens(text))

    async def respond_stream(
        self, messages: list[dict[str, Any]], options: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """The reply streamed in pieces of :data:`STREAM_CHUNK_CHARS`, as
        litellm's custom providers stream; the last chunk carries the usage.
        ``streams`` records, per streamed call, how many pieces were taken."""
        text, prompt, completion = await self._answer(messages, options)
        pieces = [text[i : i + STREAM_CHUNK_CHARS] for i in range(0, len(text), STREAM_CHUNK_CHARS)]
        taken = [0, len(pieces)]
        self.streams.append(taken)
        for piece in pieces:
            yield {"text": piece, "is_finished": False, "finish_reason": "", "usage": None}
            taken[0] += 1
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        usage["total_tokens"] = prompt + completion
        yield {"text": "", "is_finished": True, "finish_reason": "stop", "usage": usage}

    async def respond(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Any:
        lm = litellm_module()
        text, prompt, completion = await self._answer(messages, options)
        return lm.ModelResponse(
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            usage=lm.Usage(
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
            ),
            model=self.model,
        )


def _install() -> None:
    """Register the provider with litellm once per process."""
    lm = litellm_module()
    if any(p.get("provider") == PROVIDER for p in lm.custom_provider_map):
        return

    class _Provider(lm.CustomLLM):  # type: ignore[misc, name-defined]
        async def acompletion(self, model: str, messages: list[Any], *args: Any, **kw: Any) -> Any:
            options = kw.get("optional_params") or (args[7] if len(args) > 7 else {})
            scripted = _models.get(model)
            if scripted is None:
                raise ValueError(f"no scripted model named {model!r}")
            return await scripted.respond(messages, dict(options or {}))

        async def astreaming(
            self, model: str, messages: list[Any], *args: Any, **kw: Any
        ) -> AsyncIterator[dict[str, Any]]:
            options = kw.get("optional_params") or (args[7] if len(args) > 7 else {})
            scripted = _models.get(model)
            if scripted is None:
                raise ValueError(f"no scripted model named {model!r}")
            async for chunk in scripted.respond_stream(messages, dict(options or {})):
                yield chunk

    lm.custom_provider_map = [
        *lm.custom_provider_map,
        {"provider": PROVIDER, "custom_handler": _Provider()},
    ]
