"""The broker: every model call, root or sub, goes through here.

One broker per recursion tree. It owns the concurrency limit, retries with
backoff (tenacity) on rate limits, 5xx, timeouts and broken connections,
the prompt-size guard, the optional response cache, usage and cost (through
litellm's cost map), and reports every call to the ledger and as an event.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from polyrlm.cache import ResponseCache, request_digest
from polyrlm.config import (
    CALL_TIMEOUT_S,
    DEFAULT_MAX_CONCURRENCY,
    RETRY_ATTEMPTS,
    RETRY_INITIAL_WAIT_S,
    RETRY_MAX_WAIT_S,
)
from polyrlm.environment import SubCallFailure
from polyrlm.errors import BudgetExhausted, ModelCallFailed, PromptTooLong, SubCallError
from polyrlm.events import BatchStarted, Event, ModelCalled
from polyrlm.ledger import Ledger
from polyrlm.provider import LiteLLM, Reply, message_text
from polyrlm.records import Role

__all__ = ["Broker", "RecordedCalls"]

Messages = list[dict[str, Any]]


class RecordedCalls(Protocol):
    """A recorded source of model calls (a trajectory's, for a replay:
    :class:`polyrlm.replay_book.ReplayBook`), served instead of a provider."""

    def peek(self, *, role: Role, run_id: str, digest: str) -> ModelCalled | None:
        """The call :meth:`serve` would return now, if any; nothing is used up."""

    def serve(self, *, role: Role, run_id: str, digest: str, prompt: str) -> ModelCalled:
        """The recorded call answering this request; raises
        :class:`~polyrlm.errors.ModelCallFailed` when there is none."""


class Broker:
    """Sends model calls through ``litellm.acompletion`` under one budget."""

    def __init__(
        self,
        ledger: Ledger,
        emit: Callable[[Event], None],
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        cache: ResponseCache | None = None,
        retry_attempts: int = RETRY_ATTEMPTS,
        retry_initial_wait_s: float = RETRY_INITIAL_WAIT_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
        windows: Mapping[str, int] | None = None,
        replay: RecordedCalls | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.ledger = ledger
        self.emit = emit
        self.max_concurrency = max_concurrency
        self.cache = cache
        self.retry_attempts = retry_attempts
        self.retry_initial_wait_s = retry_initial_wait_s
        self.call_timeout_s = call_timeout_s
        #: Window overrides given by the caller (the rest come from litellm).
        self.windows: dict[str, int] = dict(windows or {})
        self._windows: dict[str, int | None] = dict(self.windows)
        self._ids = itertools.count(1)
        self._batch_ids = itertools.count(1)
        #: The model source: litellm (None), or a record that serves every call.
        self.replay = replay
        self._sem: asyncio.Semaphore | None = None
        #: The live model source (litellm), used when there is no record.
        self.provider = LiteLLM(call_timeout_s)

    def window(self, model: str) -> int | None:
        """Input tokens ``model`` accepts, from the overrides or litellm's map."""
        if model not in self._windows:
            self._windows[model] = self.provider.window(model)
        return self._windows[model]

    def _guard(self, model: str, messages: Messages) -> None:
        window = self.window(model)
        if window is None:
            return
        chars = sum(len(message_text(m)) for m in messages)
        if chars <= window:  # a token is at least one character: no need to count
            return
        tokens = self.provider.count(model, messages)
        if tokens > window:
            raise PromptTooLong(
                f"prompt of {tokens} tokens ({chars} characters) exceeds the {window}-token "
                f"window of {model}; it was not sent. Split it into pieces of at most about "
                f"{window * 3} characters."
            )

    async def call(
        self,
        messages: Messages,
        *,
        model: str,
        role: Role,
        depth: int,
        run_id: str,
        exec_id: str | None = None,
        batch_id: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """One model call; returns the reply text. Raises as :meth:`turn`."""
        reply = await self.turn(
            messages,
            model=model,
            role=role,
            depth=depth,
            run_id=run_id,
            exec_id=exec_id,
            batch_id=batch_id,
            options=options,
        )
        return reply.text

    async def turn(
        self,
        messages: Messages,
        *,
        model: str,
        role: Role,
        depth: int,
        run_id: str,
        exec_id: str | None = None,
        batch_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        cut: Callable[[str], int | None] | None = None,
        stop: Sequence[str] = (),
    ) -> Reply:
        """One model call; returns the whole reply (text and tool calls).

        ``cut`` streams the reply and ends it where ``cut(text_so_far)``
        says (the root's first code block); ``stop`` is sent along only where
        the model takes stop sequences.

        Raises :class:`PromptTooLong` or :class:`SubCallError` (nothing sent),
        :class:`BudgetExhausted` (nothing sent), :class:`ModelCallFailed`.
        """
        opts = dict(options or {})
        self._guard(model, messages)
        digest = request_digest(model, messages, opts)
        call_id = f"c{next(self._ids)}"
        shown = message_text(messages[-1]) if messages else ""

        def report(text: str | None, pt: int = 0, ct: int = 0, **extra: Any) -> None:
            self.emit(
                ModelCalled(
                    run_id=run_id,
                    call_id=call_id,
                    exec_id=exec_id,
                    batch_id=batch_id,
                    role=role,
                    depth=depth,
                    model=model,
                    prompt=shown,
                    request_digest=digest,
                    response=text,
                    prompt_tokens=pt,
                    completion_tokens=ct,
                    **extra,
                )
            )

        if self.replay is not None:
            return self._replayed(self.replay, role, depth, run_id, digest, shown, report)
        cached = self.cache.get(digest) if self.cache is not None else None
        if cached is not None:
            text, pt, ct, calls = cached
            tools = tuple(calls)
            self.ledger.check_depth(depth)
            self.ledger.record(role, depth, cost_usd=0.0, cached=True)
            report(text, pt, ct, cost_usd=0.0, cached=True, tool_calls=list(tools) or None)
            return Reply(text, pt, ct, 0, 0.0, tool_calls=tools)

        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
        started = time.perf_counter()
        reserved = False
        try:
            sent = self.provider.options(model, opts, list(stop))
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.retry_attempts),
                wait=wait_exponential(multiplier=self.retry_initial_wait_s, max=RETRY_MAX_WAIT_S)
                + wait_random(0, self.retry_initial_wait_s),  # jitter spreads retry bursts
                retry=retry_if_exception_type(self.provider.retryable),
                reraise=True,
            ):
                with attempt:
                    async with self._sem:  # held per attempt, released during backoff
                        if not reserved:
                            self.ledger.reserve_call(depth)
                            reserved = True
                            started = time.perf_counter()
                        reply = await self.provider.complete(model, messages, sent, cut)
        except (BudgetExhausted, SubCallError):
            raise
        except Exception as exc:
            error = exc.args[0] if isinstance(exc, ModelCallFailed) else None
            error = error or self.provider.explain(model, exc)
            if reserved:
                self.ledger.record(role, depth, failed=True)
            report(None, latency_s=time.perf_counter() - started, error=error)
            raise ModelCallFailed(error) from exc
        latency = time.perf_counter() - started
        pt, ct, cost = reply.prompt_tokens, reply.completion_tokens, reply.cost_usd
        hit = reply.cached_tokens
        self.ledger.record(
            role,
            depth,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=cost,
            cached_prompt_tokens=hit,
        )
        report(
            reply.text,
            pt,
            ct,
            cost_usd=cost,
            latency_s=latency,
            tool_calls=list(reply.tool_calls) or None,
            cached_prompt_tokens=hit,
        )
        if self.cache is not None:
            self.cache.put(digest, (reply.text, pt, ct, list(reply.tool_calls)))
        return reply

    def _replayed(
        self,
        book: RecordedCalls,
        role: Role,
        depth: int,
        run_id: str,
        digest: str,
        prompt: str,
        report: Callable[..., None],
    ) -> Reply:
        """A call served from the record: the ledger counts it as the
        original was counted, so budget stops happen at the same step."""
        ahead = book.peek(role=role, run_id=run_id, digest=digest)
        if ahead is not None and ahead.cached:
            self.ledger.check_depth(depth)
        else:  # refused here (depth, budget) as the original was: before it was sent
            self.ledger.reserve_call(depth)
        recorded = book.serve(role=role, run_id=run_id, digest=digest, prompt=prompt)
        if recorded.cached:
            self.ledger.record(role, depth, cost_usd=0.0, cached=True)
        else:
            if recorded.error is not None:
                self.ledger.record(role, depth, failed=True)
                report(None, error=recorded.error)
                raise ModelCallFailed(recorded.error)
            pt, ct = recorded.prompt_tokens, recorded.completion_tokens
            self.ledger.record(
                role,
                depth,
                prompt_tokens=pt,
                completion_tokens=ct,
                cost_usd=recorded.cost_usd,
                cached_prompt_tokens=recorded.cached_prompt_tokens,
            )
        text = recorded.response or ""
        report(
            text,
            recorded.prompt_tokens,
            recorded.completion_tokens,
            cost_usd=recorded.cost_usd,
            cached=recorded.cached,
            tool_calls=recorded.tool_calls,
            cached_prompt_tokens=recorded.cached_prompt_tokens,
        )
        return Reply(
            text,
            recorded.prompt_tokens,
            recorded.completion_tokens,
            recorded.cached_prompt_tokens,
            recorded.cost_usd,
            tool_calls=tuple(recorded.tool_calls or ()),
        )

    async def batch(
        self,
        prompts: Sequence[str],
        *,
        model: str,
        depth: int,
        run_id: str,
        exec_id: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Concurrent sub-calls in input order; a failed item becomes a
        :class:`SubCallFailure` and the others are unharmed."""
        batch_id = f"b{next(self._batch_ids)}"
        self.emit(
            BatchStarted(
                run_id=run_id, batch_id=batch_id, exec_id=exec_id, depth=depth, size=len(prompts)
            )
        )

        async def one(prompt: str) -> str:
            try:
                return await self.call(
                    [{"role": "user", "content": str(prompt)}],
                    model=model,
                    role=Role.SUB,
                    depth=depth,
                    run_id=run_id,
                    exec_id=exec_id,
                    batch_id=batch_id,
                    options=options,
                )
            except (SubCallError, BudgetExhausted, ModelCallFailed) as exc:
                return SubCallFailure(str(exc))

        return list(await asyncio.gather(*(one(p) for p in prompts)))
