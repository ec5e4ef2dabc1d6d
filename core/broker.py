"""The broker: every model call, root or sub, goes through here.

One broker per recursion tree. It owns the concurrency limit, retries with
backoff (:mod:`polyrlm.retries`: Retry-After honoured within the run's
deadline) on rate limits, 5xx, timeouts and broken connections, the
admission of each request under the budget (:mod:`polyrlm.admission`),
the prompt-size guard, the optional response cache, usage and cost (through
litellm's cost map), and reports every call to the ledger and as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from polyrlm.admission import Admission
from polyrlm.cache import ResponseCache, request_digest
from polyrlm.config import (
    CALL_TIMEOUT_S,
    DEFAULT_MAX_CONCURRENCY,
    RETRY_ATTEMPTS,
    RETRY_INITIAL_WAIT_S,
)
from polyrlm.environment import SubCallFailure
from polyrlm.errors import BudgetExhausted, ModelCallFailed, PromptTooLong, SubCallError
from polyrlm.events import BatchStarted, Event, ModelCalled
from polyrlm.ledger import Hold, Ledger
from polyrlm.provider import LiteLLM, Reply, message_text
from polyrlm.recorded_calls import DEADLINE_ERROR, RecordedCalls, serve_recorded
from polyrlm.records import Role
from polyrlm.retries import backoff_s, retry_after_s, wait_problem

__all__ = ["EMPTY_PROMPT_ERROR", "Broker", "RecordedCalls"]  # (RecordedCalls re-exported)

Messages = list[dict[str, Any]]

#: Seconds past a request's own timeout (the one litellm is given) after
#: which the broker gives up on it itself: a stream that stalls mid-reply.
CALL_TIMEOUT_SLACK_S = 5.0


#: A sub-call whose prompt is empty or blank is refused with this, unsent: a
#: model given no text can only guess, and a small root takes the guess as
#: the answer (``llm "What is the code?"`` with nothing piped in).
EMPTY_PROMPT_ERROR = (
    "the prompt is empty: nothing was sent (a sub-model given no text can only guess); "
    "put the text it should read into the prompt"
)


class _NoReply(Exception):
    """A request that did not answer within its timeout (retried)."""


@dataclass
class _Attempts:
    """What the attempts of one call have done so far."""

    attempts: int = 0
    hold: Hold | None = None
    latency_s: float = 0.0


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
        depth_concurrency: Mapping[int, int] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if any(n < 1 for n in (depth_concurrency or {}).values()):
            raise ValueError("each depth's concurrency must be at least 1")
        #: Calls in flight at once per depth (0: root calls, 1: their code's
        #: sub-calls and child roots, ...), each within ``max_concurrency``.
        self.depth_concurrency: dict[int, int] = dict(depth_concurrency or {})
        self._depth_sems: dict[int, asyncio.Semaphore] = {}
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
        self.admission = Admission(ledger, self.provider)

    def window(self, model: str) -> int | None:
        """Input tokens ``model`` accepts, from the overrides or litellm's map."""
        if model not in self._windows:
            self._windows[model] = self.provider.window(model)
        return self._windows[model]

    def windows_learned(self, model: str, tokens: int) -> None:
        """The provider refused a prompt of more than ``tokens``: use that as
        the model's window from now on (when none, or a larger one, was known)."""
        known = self.window(model)
        self._windows[model] = tokens if known is None else min(known, tokens)

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
        on_text: Callable[[str], None] | None = None,
    ) -> Reply:
        """One model call; returns the whole reply (text and tool calls).

        ``cut`` streams the reply and ends it where ``cut(text_so_far)``
        says (the root's first code block); ``stop`` is sent along only where
        the model takes stop sequences; ``on_text`` is called with the text so
        far as each piece arrives, and the reply is streamed even where a
        stop sequence is sent (pipelined turns, :mod:`polyrlm.pipeline`).

        Raises :class:`PromptTooLong` or :class:`SubCallError` (nothing sent;
        also for a sub-call with an empty prompt, :data:`EMPTY_PROMPT_ERROR`),
        :class:`BudgetExhausted` (nothing sent), :class:`ModelCallFailed`.
        """
        opts = dict(options or {})
        shown = message_text(messages[-1]) if messages else ""
        if role is Role.SUB and not shown.strip():
            raise SubCallError(EMPTY_PROMPT_ERROR)
        self._guard(model, messages)
        digest = request_digest(model, messages, opts)
        call_id = f"c{next(self._ids)}"

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
            plan = self.admission.plan(model, messages, opts)
            return await serve_recorded(
                self.replay,
                self.ledger,
                self.admission,
                plan,
                model,
                role,
                depth,
                run_id,
                digest,
                shown,
                report,
            )
        cached = self.cache.get(digest) if self.cache is not None else None
        if cached is not None:
            text, pt, ct, calls = cached
            tools = tuple(calls)
            self.ledger.check_depth(depth)
            self.ledger.record(role, depth, cost_usd=0.0, cached=True)
            report(
                text, pt, ct, cost_usd=0.0, cached=True, tool_calls=list(tools) or None, requests=0
            )
            return Reply(text, pt, ct, 0, 0.0, tool_calls=tools)

        if self._sem is None:
            self._sem = asyncio.Semaphore(self.max_concurrency)
        live = _Attempts()
        try:
            async with asyncio.timeout(self.ledger.seconds_left()) as scope:
                reply = await self._send(
                    model, messages, opts, list(stop), cut, depth, live, on_text
                )
        except BaseException as exc:
            if live.hold is not None:
                self.ledger.release(live.hold)
            deadline = isinstance(exc, TimeoutError) and scope.expired()
            if not live.attempts and not isinstance(exc, ModelCallFailed):
                if deadline:  # it waited for a slot or for room, and time ran out
                    raise self.ledger.out_of_time() from None
                raise  # refused or cancelled before anything was sent
            error = self._failure_text(model, exc, deadline)
            if live.attempts:
                self.ledger.record(role, depth, failed=True, requests=live.attempts)
            report(None, latency_s=live.latency_s, error=error, requests=live.attempts)
            if deadline:
                raise self.ledger.out_of_time() from None
            if isinstance(exc, self.provider.too_long):
                raise PromptTooLong(error) from exc  # the caller may shorten it
            if isinstance(exc, Exception) and not isinstance(exc, (BudgetExhausted, SubCallError)):
                raise ModelCallFailed(error) from exc
            raise
        pt, ct, cost = reply.prompt_tokens, reply.completion_tokens, reply.cost_usd
        hit = reply.cached_tokens
        self.ledger.record(
            role,
            depth,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=cost,
            cached_prompt_tokens=hit,
            requests=live.attempts,
            hold=live.hold,
        )
        report(
            reply.text,
            pt,
            ct,
            cost_usd=cost,
            latency_s=live.latency_s,
            tool_calls=list(reply.tool_calls) or None,
            cached_prompt_tokens=hit,
            requests=live.attempts,
        )
        if self.cache is not None:
            self.cache.put(digest, (reply.text, pt, ct, list(reply.tool_calls)))
        return reply

    def _depth_slot(self, depth: int) -> contextlib.AbstractAsyncContextManager[Any]:
        limit = self.depth_concurrency.get(depth)
        if limit is None:
            return contextlib.nullcontext()
        if depth not in self._depth_sems:
            self._depth_sems[depth] = asyncio.Semaphore(limit)
        return self._depth_sems[depth]

    def _failure_text(self, model: str, exc: BaseException, deadline: bool) -> str:
        if deadline:
            return f"{model}: {DEADLINE_ERROR}"
        if isinstance(exc, asyncio.CancelledError):
            return f"{model}: cancelled (the block or the run that made it ended)"
        if isinstance(exc, (ModelCallFailed, BudgetExhausted)):
            return str(exc)
        return self.provider.explain(model, exc)

    async def _send(
        self,
        model: str,
        messages: Messages,
        opts: dict[str, Any],
        stop: list[str],
        cut: Callable[[str], int | None] | None,
        depth: int,
        live: _Attempts,
        on_text: Callable[[str], None] | None = None,
    ) -> Reply:
        """Send with retries: each attempt gets a concurrency slot and is
        admitted by the ledger (holding its worst case); backoff waits hold
        neither. Raises the last attempt's error."""
        assert self._sem is not None
        sent = self.provider.options(model, opts, stop)
        timeout = float(sent.pop("timeout", None) or self.call_timeout_s)
        plan = self.admission.plan(model, messages, sent)
        while True:
            # The depth's own slot first: a call waiting for it holds no shared slot.
            async with self._depth_slot(depth), self._sem:
                live.hold, request = await self.admission.admit(model, depth, plan, sent)
                live.attempts += 1
                started = time.perf_counter()
                try:
                    left = self.ledger.seconds_left()
                    limit = timeout if left is None else min(timeout, left)
                    async with asyncio.timeout(limit + CALL_TIMEOUT_SLACK_S):
                        return await self.provider.complete(
                            model, messages, request, cut, limit, on_text
                        )
                except TimeoutError as exc:
                    if self.ledger.seconds_left() == 0:
                        raise  # the deadline, not the provider: the caller says so
                    failure: BaseException = _NoReply(f"{model}: no reply within {limit:g} s")
                    failure.__cause__ = exc
                except Exception as exc:
                    if not self.provider.should_retry(exc):
                        raise
                    failure = exc
                finally:
                    live.latency_s = time.perf_counter() - started
                self.ledger.release(live.hold)
            if live.attempts >= self.retry_attempts:
                raise failure
            asked = retry_after_s(failure)
            wait = (
                asked if asked is not None else backoff_s(live.attempts, self.retry_initial_wait_s)
            )
            problem = wait_problem(wait, asked, self.ledger.seconds_left())
            if problem is not None:
                raise ModelCallFailed(f"{self.provider.explain(model, failure)}; {problem}")
            await asyncio.sleep(wait)

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
