"""The sub-call functions offered to an environment's code.

The code runs in a worker thread; each function hands a coroutine to the
run's event loop (where the broker lives) and blocks until it is done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from polyrlm.broker import Broker
from polyrlm.config import CHILD_QUESTION_CHARS
from polyrlm.environment import SubCallFailure
from polyrlm.errors import BudgetExhausted, ModelCallFailed, SubCallError
from polyrlm.records import Role, StopReason
from polyrlm.runspec import Outcome, Settings
from polyrlm.tool_calls import ToolRunner
from polyrlm.tools import Tool
from polyrlm.typed_calls import SubSchema

__all__ = ["WAIT_POLL_S", "ChildRuns", "LoopSubCalls"]

#: Seconds between wake-ups of a thread waiting on a sub-call, so that an
#: interrupt raised in it (a block's timeout) is seen within that time.
WAIT_POLL_S = 0.1

T = TypeVar("T")


class ChildRuns(Protocol):
    """The recursion tree the sub-calls belong to (:class:`polyrlm.loop.Tree`):
    its broker and settings, and a child loop on demand."""

    broker: Broker
    settings: Settings
    tools: ToolRunner

    async def run(
        self,
        question: str,
        context: Any,
        *,
        depth: int = 0,
        parent_run_id: str | None = None,
        parent_exec_id: str | None = None,
    ) -> Outcome:
        """One loop at ``depth`` (a child RLM when ``depth > 0``)."""
        ...


class LoopSubCalls:
    """:class:`~polyrlm.environment.SubCalls` of one loop at ``depth``."""

    def __init__(
        self, tree: ChildRuns, loop: asyncio.AbstractEventLoop, depth: int, run_id: str
    ) -> None:
        self.tree = tree
        self.loop = loop
        self.depth = depth
        self.run_id = run_id
        #: The execution running now: sub-calls and child runs link to it.
        self.exec_id: str | None = None
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._refusing: str | None = None
        #: The user tools this loop's code may call.
        self.tools: tuple[Tool, ...] = tree.tools.offered(depth)

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError("sub-calls must be made from the execution thread, not the loop")
        with self._lock:
            if self._refusing is not None:
                coro.close()
                raise SubCallError(self._refusing)
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            self._pending.add(future)
        try:
            while True:  # wake often: an interrupt raised in this thread must get through
                try:
                    return future.result(WAIT_POLL_S)
                except concurrent.futures.TimeoutError:
                    continue
        except concurrent.futures.CancelledError:
            raise SubCallError(self._refusing or "the sub-call was cancelled") from None
        finally:
            future.cancel()  # a no-op when done; frees its slot when the block was stopped
            with self._lock:
                self._pending.discard(future)

    def begin(self, exec_id: str) -> None:
        """A new execution starts: its sub-calls link to it and are served."""
        with self._lock:
            self.exec_id = exec_id
            self._refusing = None

    def end(self, reason: str = "the block that made this sub-call has ended") -> None:
        """The execution ended (or was stopped): its sub-calls still in
        flight are cancelled, giving back their concurrency slots, and new
        ones are refused with ``reason`` until the next :meth:`begin`."""
        with self._lock:
            self._refusing = reason
            pending = list(self._pending)
        for future in pending:
            future.cancel()

    # -- async versions: also what the bridge serves to out-of-process code --

    async def allm_query(
        self, prompt: str, model: str | None = None, schema: dict[str, Any] | None = None
    ) -> Any:
        settings = self.tree.settings
        chosen = settings.offered_model(model)

        async def send(messages: list[dict[str, Any]], options: dict[str, Any]) -> str:
            try:
                return await self.tree.broker.call(
                    messages,
                    model=chosen,
                    role=Role.SUB,
                    depth=self.depth + 1,
                    run_id=self.run_id,
                    exec_id=self.exec_id,
                    options=options,
                )
            except (ModelCallFailed, BudgetExhausted) as exc:
                raise SubCallError(str(exc)) from None

        if schema is None:
            return await send([{"role": "user", "content": str(prompt)}], settings.sub_options)
        typed = SubSchema(schema)
        options = typed.options(self.tree.broker.provider, chosen, settings.sub_options)
        return await typed.ask(str(prompt), send, options)

    async def allm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: dict[str, Any] | None = None
    ) -> list[Any]:
        if schema is not None:  # typed: each item validated (and asked again) on its own
            SubSchema(schema)  # a bad schema fails the whole batch, at once

            async def one(prompt: str) -> Any:
                try:
                    return await self.allm_query(prompt, model, schema)
                except SubCallError as exc:
                    return SubCallFailure(str(exc))

            return list(await asyncio.gather(*(one(str(p)) for p in prompts)))
        return await self.tree.broker.batch(
            [str(p) for p in prompts],
            model=self.tree.settings.offered_model(model),
            depth=self.depth + 1,
            run_id=self.run_id,
            exec_id=self.exec_id,
            options=self.tree.settings.sub_options,
        )

    async def acall_tool(self, name: str, arguments: Mapping[str, Any]) -> Any:
        return await self.tree.tools.call(
            name, arguments, depth=self.depth, run_id=self.run_id, exec_id=self.exec_id
        )

    async def acall_tools(self, name: str, arguments: Sequence[Mapping[str, Any]]) -> list[Any]:
        return await self.tree.tools.batch(
            name, list(arguments), depth=self.depth, run_id=self.run_id, exec_id=self.exec_id
        )

    async def arlm_query(self, prompt: str, context: Any = None) -> str:
        depth = self.depth + 1
        if depth >= self.tree.settings.budget.max_depth:  # at the limit: a plain sub-call
            text = str(prompt) if context is None else f"{prompt}\n\n{context}"
            return str(await self.allm_query(text))
        question = str(prompt)
        if context is None:
            context = question
            if len(question) > CHILD_QUESTION_CHARS:
                question = (
                    question[:CHILD_QUESTION_CHARS] + " ... (the full request is the context)"
                )
        outcome = await self.tree.run(
            question, context, depth=depth, parent_run_id=self.run_id, parent_exec_id=self.exec_id
        )
        if outcome.stop_reason != StopReason.ANSWERED and not outcome.fallback:
            detail = f": {outcome.error}" if outcome.error else ""
            raise SubCallError(
                f"child RLM stopped ({outcome.stop_reason}) without an answer{detail}"
            )
        answer = outcome.answer
        return answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)

    async def arlm_batch(
        self, prompts: Sequence[str], contexts: Sequence[Any] | None = None
    ) -> list[str]:
        if contexts is not None and len(contexts) != len(prompts):
            raise SubCallError(f"{len(prompts)} prompts but {len(contexts)} contexts")
        ctxs = list(contexts) if contexts is not None else [None] * len(prompts)

        async def one(prompt: str, context: Any) -> str:
            try:
                return await self.arlm_query(prompt, context)
            except SubCallError as exc:
                return SubCallFailure(str(exc))

        return list(await asyncio.gather(*(one(p, c) for p, c in zip(prompts, ctxs, strict=True))))

    # -- blocking versions, for code running in a worker thread --

    def llm_query(
        self, prompt: str, model: str | None = None, schema: dict[str, Any] | None = None
    ) -> Any:
        return self._wait(self.allm_query(prompt, model, schema))

    def llm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: dict[str, Any] | None = None
    ) -> list[Any]:
        return self._wait(self.allm_batch(prompts, model, schema))

    def call_tool(self, name: str, arguments: Mapping[str, Any]) -> Any:
        return self._wait(self.acall_tool(name, arguments))

    def call_tools(self, name: str, arguments: Sequence[Mapping[str, Any]]) -> list[Any]:
        return self._wait(self.acall_tools(name, arguments))

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        return self._wait(self.arlm_query(prompt, context))

    def rlm_batch(self, prompts: Sequence[str], contexts: Sequence[Any] | None = None) -> list[str]:
        return self._wait(self.arlm_batch(prompts, contexts))
