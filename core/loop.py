"""The orchestration loop: root turns, code blocks, the answer, the budget.

One :class:`Tree` per :meth:`RLM.acompletion`: it holds the ledger and the
broker shared by the root loop and every child loop under it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polyrlm.answer_desk import AnswerDesk
from polyrlm.broker import Broker
from polyrlm.config import CLOSE_TIMEOUT_S, DEADLINE_GRACE_S
from polyrlm.contexts import check_context, describe_context
from polyrlm.environment import Environment
from polyrlm.errors import (
    BudgetExhausted,
    ConfigError,
    FatalError,
    ModelCallFailed,
    PromptTooLong,
    SubCallError,
)
from polyrlm.events import CodeExecuted, Event, RunFinished, RunStarted, TurnStarted
from polyrlm.history import REPLY_ROOM_TOKENS, fit_window
from polyrlm.ledger import Ledger
from polyrlm.opening import opening
from polyrlm.parsing import (
    CodeBlock,
    code_end,
    extract_blocks,
    select_blocks,
    xml_call_code,
)
from polyrlm.prompts import (
    FALLBACK_PROMPT,
    NO_CODE_PROMPT,
    RUN_CODE_TOOL,
    XML_CALL_NOTE,
)
from polyrlm.provider import Reply
from polyrlm.recording import context_record
from polyrlm.records import ExecResult, Role, StopReason
from polyrlm.runspec import Outcome, Settings
from polyrlm.subcalls import LoopSubCalls
from polyrlm.threads import bounded, in_thread
from polyrlm.tool_calls import ToolRunner
from polyrlm.turns import (
    assistant_message,
    cache_marked,
    observation,
    run_code_argument,
    tool_result,
)

__all__ = ["CODE_END_STOP", "Outcome", "Settings", "Tree", "in_thread"]  # (re-exported)

#: Stop sequence sent with root calls to models that take one (litellm's map
#: says which): generation ends with the code block. The reply is cut there
#: client-side in any case (:func:`polyrlm.parsing.code_end`), so no model
#: can invent the block's output and answer on top of it.
CODE_END_STOP = "\n```\n"

#: When the provider refuses a root prompt as too long, the next try is
#: compacted to this fraction of the tokens refused.
RETRY_WINDOW_FRACTION = 0.7

#: Characters of an environment's own failure (not the code's) shown to the model.
ENV_FAILURE_CHARS = 2_000

#: Seconds past the deadline after which a run still going is stopped from
#: outside; with the wait for its block to stop, the partial answer's read
#: and the closing, it has ended within :data:`~polyrlm.config.DEADLINE_GRACE_S`.
BACKSTOP_S = DEADLINE_GRACE_S - 2 * CLOSE_TIMEOUT_S


@dataclass
class _Session:
    env: Environment
    subcalls: LoopSubCalls
    answers: AnswerDesk
    context: Any
    run_id: str
    depth: int
    execs: int = 0
    #: The native run_code tool, when this root is offered it.
    tools: list[dict[str, Any]] | None = None
    #: The block running now (or last), in its thread.
    running: asyncio.Future[ExecResult] | None = None


class Tree:
    """One recursion tree: its settings, ledger, broker and event sink."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        broker: Broker,
        emit: Callable[[Event], None],
        tools: ToolRunner | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.broker = broker
        self.emit = emit
        self.tools = tools or ToolRunner(settings.tools, emit, None, ledger.seconds_left)

    def _open(self, subcalls: LoopSubCalls, context: Any) -> Environment:
        env = self.settings.backend(subcalls, self.settings.env_config)
        try:
            env.load_context(context)
        except BaseException:
            env.close()
            raise
        return env

    async def run(
        self,
        question: str,
        context: Any,
        *,
        depth: int = 0,
        parent_run_id: str | None = None,
        parent_exec_id: str | None = None,
    ) -> Outcome:
        """One loop. At depth 0 a context that cannot be loaded raises
        :class:`ConfigError`; in a child it is the calling code's error."""
        run_id = uuid.uuid4().hex[:12]
        subcalls = LoopSubCalls(self, asyncio.get_running_loop(), depth, run_id)
        source = context_record(context) if depth == 0 else None  # before: it may raise
        try:
            if depth:  # the root's was checked before its log was opened
                check_context(context)
            env = await in_thread(self._open, subcalls, context)
        except ConfigError as exc:
            if depth == 0:
                raise
            raise SubCallError(f"child RLM could not load its context: {exc}") from exc
        answer_type = self.settings.answer_type if depth == 0 else None
        s = _Session(
            env, subcalls, AnswerDesk(answer_type, self.emit, run_id), context, run_id, depth
        )
        self.emit(
            RunStarted(
                run_id=run_id,
                parent_run_id=parent_run_id,
                parent_exec_id=parent_exec_id,
                depth=depth,
                question=question,
                backend=env.name,
                model=self.settings.model if depth == 0 else self.settings.child_model,
                sub_model=self.settings.sub_model,
                context_meta=describe_context(context),
                settings=self.settings.record(self.broker) if depth == 0 else None,
                context_source=source,
            )
        )
        outcome = Outcome(None, StopReason.ERROR, error="run did not finish")
        iterations = 0
        left = self.ledger.seconds_left()
        try:
            # The backstop: model calls end at the deadline and blocks are
            # interrupted there; this catches an environment that did not stop.
            async with asyncio.timeout(None if left is None else left + BACKSTOP_S) as scope:
                outcome, iterations = await self._turns(s, question)
        except BudgetExhausted as exc:
            outcome = Outcome(await self._partial(s), StopReason(exc.reason), error=str(exc))
        except FatalError as exc:
            outcome = Outcome(await self._partial(s), StopReason.ERROR, error=str(exc))
        except TimeoutError:
            if not scope.expired():
                raise
            error = str(self.ledger.out_of_time())
            outcome = Outcome(await self._partial(s), StopReason.MAX_SECONDS, error=error)
        except asyncio.CancelledError:  # Ctrl-C, SIGTERM, or the block that made this child ended
            outcome = Outcome(
                await self._partial(s), StopReason.INTERRUPTED, error="the run was interrupted"
            )
            raise
        finally:
            s.subcalls.end("the run has ended")
            await bounded(in_thread(s.env.close), CLOSE_TIMEOUT_S)
            self.emit(
                RunFinished(
                    run_id=run_id,
                    stop_reason=outcome.stop_reason,
                    answer=s.answers.recorded(outcome.answer),
                    fallback=outcome.fallback,
                    error=outcome.error,
                    iterations=iterations,
                    usage=self.ledger.usage().total,
                )
            )
        return outcome

    def _model(self, s: _Session) -> str:
        return self.settings.model if s.depth == 0 else self.settings.child_model

    async def _turns(self, s: _Session, question: str) -> tuple[Outcome, int]:
        budget = self.settings.budget
        messages, s.tools = await in_thread(
            opening,
            self.settings,
            self.broker.provider,
            s.env,
            s.subcalls.tools,
            s.context,
            s.depth,
            question,
        )
        for iteration in range(1, budget.max_iterations + 2):
            last = iteration > budget.max_iterations
            if last:  # out of turns: ask once for the answer
                messages[-1]["content"] += "\n\n" + FALLBACK_PROMPT
            system = messages[0]["content"] if iteration == 1 else None
            self.emit(
                TurnStarted(
                    run_id=s.run_id, depth=s.depth, iteration=iteration, system_prompt=system
                )
            )
            reply = await self._root_call(s, messages)
            messages.append(assistant_message(reply))
            observation, result, tool_results = await self._run_reply(s, reply, iteration)
            if result is not None:
                reason = StopReason.MAX_ITERATIONS if last else StopReason.ANSWERED
                return Outcome(s.answers.accepted, reason, fallback=last), iteration
            self.ledger.check()
            messages.extend(tool_results)
            if observation or not tool_results:
                messages.append({"role": "user", "content": observation})
        partial = await self._partial(s)
        return Outcome(partial, StopReason.MAX_ITERATIONS), budget.max_iterations + 1

    async def _root_call(self, s: _Session, messages: list[dict[str, Any]]) -> Reply:
        model, at_code_end = self._model(s), self.settings.stop_at_code_end
        options = dict(self.settings.root_options)
        if s.tools:
            options.setdefault("tools", s.tools)
        self.ledger.iterations += 1
        window = self.broker.window(model)
        for attempt in range(2):  # once more, compacted harder, if the provider refuses it
            room = self.broker.provider.max_output(model) or REPLY_ROOM_TOKENS
            sent = fit_window(
                messages, window, room, lambda m: self.broker.provider.count(model, m)
            )
            if sent is None:
                raise ModelCallFailed(
                    f"the root conversation does not fit the {window}-token window of {model} "
                    "even with every older turn compacted"
                )
            try:
                return await self.broker.turn(
                    cache_marked(sent) if self.broker.provider.caches_prompts(model) else sent,
                    model=model,
                    role=Role.ROOT,
                    depth=s.depth,
                    run_id=s.run_id,
                    options=options,
                    # The reply ends after its first code block, for every model: by
                    # the stop sequence where the model takes one, else the stream is
                    # closed there (polyrlm.provider).
                    cut=code_end if at_code_end else None,
                    stop=[CODE_END_STOP] if at_code_end else (),
                )
            except PromptTooLong as exc:  # the history outgrew what the provider takes
                # Learn a window below the refused size: later turns fit at once.
                window = int(self.broker.provider.count(model, sent) * RETRY_WINDOW_FRACTION)
                self.broker.windows_learned(model, window)
                if attempt:
                    raise ModelCallFailed(f"root call refused: {exc}") from exc
            except SubCallError as exc:
                raise ModelCallFailed(f"root call refused: {exc}") from exc
        raise AssertionError("unreachable")

    async def _run_tool_calls(
        self, s: _Session, reply: Reply, iteration: int
    ) -> tuple[str, ExecResult | None, list[dict[str, Any]]]:
        results: list[dict[str, Any]] = []
        for call in reply.tool_calls:
            code, problem = run_code_argument(call)
            if code is None:
                results.append(tool_result(call, problem))
                continue
            result = await self._execute(s, code, iteration)
            answered, note = s.answers.take(result, s.subcalls.exec_id)
            shown = observation(result, self.settings.budget.max_output_chars)
            results.append(tool_result(call, f"{shown}\n{note}" if note else shown))
            if answered:
                return "", result, results
            if self.ledger.exhausted is not None:
                break
        return "", None, results

    async def _run_reply(
        self, s: _Session, reply: Reply, iteration: int
    ) -> tuple[str, ExecResult | None, list[dict[str, Any]]]:
        """Run what the reply asks for: its native tool calls, else its fenced
        blocks, else the code of XML-style calls written as prose; returns the
        observation, the result that set the answer (if any) and the tool
        results to append."""
        if reply.tool_calls:
            return await self._run_tool_calls(s, reply, iteration)
        env = s.env
        runnable, wrong = select_blocks(extract_blocks(reply.text), env.fence_tags)
        notes = []
        if wrong:
            tags = ", ".join(sorted({b.tag for b in wrong}))
            notes.append(
                f"Not run: {len(wrong)} block(s) tagged {tags}; this environment runs "
                f"{env.language} (fence tags: {', '.join(env.fence_tags)})."
            )
        if not runnable and not wrong:
            xml = xml_call_code(reply.text)
            runnable = [CodeBlock(env.fence_tags[0], code, True) for code in xml]
            if runnable:
                or_tool = f" or call the {RUN_CODE_TOOL} tool" if s.tools else ""
                notes.append(XML_CALL_NOTE.format(tag=env.fence_tags[0], or_tool=or_tool))
        if not runnable:
            tag = env.fence_tags[0]
            notes.insert(0, NO_CODE_PROMPT.format(tags=" or ".join(env.fence_tags), tag=tag))
            return "\n".join(notes), None, []
        parts = []
        for number, block in enumerate(runnable, 1):
            result = await self._execute(s, block.code, iteration)
            head = f"[block {number} of {len(runnable)}]\n" if len(runnable) > 1 else ""
            answered, note = s.answers.take(result, s.subcalls.exec_id)
            shown = observation(result, self.settings.budget.max_output_chars)
            parts.append(head + (f"{shown}\n{note}" if note else shown))
            if answered:
                return "\n\n".join(parts), result, []
            if self.ledger.exhausted is not None:
                break
        return "\n\n".join(notes + parts), None, []

    async def _execute(self, s: _Session, code: str, iteration: int) -> ExecResult:
        s.execs += 1
        exec_id = f"{s.run_id}-e{s.execs}"
        s.subcalls.begin(exec_id)
        self.ledger.executions += 1
        s.env.deadline = self.ledger.deadline
        limit, grace = s.env.exec_limit_s(), s.env.config.exec_grace_s
        if limit < s.env.config.exec_timeout_s:  # the deadline bounds it: less grace
            grace = min(grace, BACKSTOP_S / 2)
        try:
            s.running = asyncio.ensure_future(in_thread(s.env.execute, code))
            result = await asyncio.wait_for(asyncio.shield(s.running), limit + grace)
        except TimeoutError:
            # The environment did not interrupt itself: abandon it, start anew
            # (unless the run is out of time anyway).
            s.running = None  # nobody waits for it again
            await bounded(in_thread(s.env.close), min(CLOSE_TIMEOUT_S, grace))
            if self.ledger.seconds_left() != 0:
                s.env = await in_thread(self._open, s.subcalls, s.context)
            result = ExecResult(
                error=f"TimeoutError: the block did not stop within {limit + grace:g} s",
                timed_out=True,
                restarted=True,
            )
        except FatalError:
            raise
        except Exception as exc:  # a backend that broke on hostile code: the model's error
            text = repr(exc)[:ENV_FAILURE_CHARS]
            result = ExecResult(error=f"the environment failed on this block: {text}")
        finally:
            s.subcalls.end()  # its sub-calls still in flight are cancelled
        self.emit(
            CodeExecuted(
                run_id=s.run_id,
                exec_id=exec_id,
                iteration=iteration,
                language=s.env.language,
                code=code,
                output=result.output,
                error=result.error,
                duration_s=result.duration_s,
                truncated_chars=result.truncated_chars,
                timed_out=result.timed_out,
                restarted=result.restarted,
            )
        )
        return result

    async def _partial(self, s: _Session) -> Any:
        """The best partial answer: the answer content, ready or not. A block
        still running (the run was stopped) is given a moment to end first,
        its sub-calls cancelled: closing an environment under a running block
        can crash its engine (DuckDB, wasmtime)."""
        s.subcalls.end("the run has ended")
        if s.running is not None and not s.running.done():
            await bounded(asyncio.shield(s.running), CLOSE_TIMEOUT_S / 2)
        try:
            state = await asyncio.wait_for(in_thread(s.env.read_state), CLOSE_TIMEOUT_S / 2)
        except Exception:  # a dead or stuck environment has no partial answer
            return None
        return s.answers.partial(state.answer if state.answer not in ("", None) else None)
