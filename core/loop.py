"""The orchestration loop: root turns, code blocks, the answer, the budget.

One :class:`Tree` per :meth:`RLM.acompletion`: it holds the ledger and the
broker shared by the root loop and every child loop under it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

from polyrlm.answer_desk import AnswerDesk
from polyrlm.broker import Broker
from polyrlm.config import CLOSE_TIMEOUT_S
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
from polyrlm.events import Event, RunFinished, RunStarted, TurnStarted
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
from polyrlm.pipeline import Pipeline
from polyrlm.prompts import (
    COMPACT_OUTPUT_NOTE,
    FALLBACK_PROMPT,
    RUN_CODE_TOOL,
    XML_CALL_NOTE,
    chosen_profile,
    no_code_note,
    repeated_note,
)
from polyrlm.provider import Reply
from polyrlm.recording import context_record
from polyrlm.records import ExecResult, Role, StopReason
from polyrlm.runspec import Outcome, Settings
from polyrlm.session import BACKSTOP_S, Session, execute_block, partial_answer
from polyrlm.spares import open_environment
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


def _no_cut(text: str) -> int | None:
    return None


def _repeated_note(s: Session) -> str:
    """What a repeated block gets instead of its output (see ``Tree._repeats``)."""
    assert s.last_block is not None
    return repeated_note(s.profile, s.last_block[1], s.last_output)


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

    def open_env(self, subcalls: LoopSubCalls, context: Any) -> Environment:
        env = open_environment(self.settings.backend, subcalls, self.settings.env_config)
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
            env = await in_thread(self.open_env, subcalls, context)
        except ConfigError as exc:
            if depth == 0:
                raise
            raise SubCallError(f"child RLM could not load its context: {exc}") from exc
        answer_type = self.settings.answer_type if depth == 0 else None
        s = Session(
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
            outcome = Outcome(await partial_answer(s), StopReason(exc.reason), error=str(exc))
        except FatalError as exc:
            outcome = Outcome(await partial_answer(s), StopReason.ERROR, error=str(exc))
        except TimeoutError:
            if not scope.expired():
                raise
            error = str(self.ledger.out_of_time())
            outcome = Outcome(await partial_answer(s), StopReason.MAX_SECONDS, error=error)
        except asyncio.CancelledError:  # Ctrl-C, SIGTERM, or the block that made this child ended
            outcome = Outcome(
                await partial_answer(s), StopReason.INTERRUPTED, error="the run was interrupted"
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

    def _model(self, s: Session) -> str:
        return self.settings.model if s.depth == 0 else self.settings.child_model

    async def _turns(self, s: Session, question: str) -> tuple[Outcome, int]:
        budget = self.settings.budget
        s.profile = chosen_profile(self.settings.prompt_profile, self.broker.window(self._model(s)))
        s.question = question
        messages, s.tools = await in_thread(
            opening,
            self.settings,
            self.broker.provider,
            s.env,
            s.subcalls.tools,
            s.context,
            s.depth,
            question,
            s.profile,
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
            pipeline = self._pipeline(s, iteration)
            try:
                reply = await self._root_call(s, messages, pipeline)
            except Exception:
                if pipeline is not None:  # parts already running end first
                    await pipeline.drain()
                raise
            messages.append(assistant_message(reply))
            observation, result, tool_results = await self._run_reply(s, reply, iteration, pipeline)
            if result is not None:
                reason = StopReason.MAX_ITERATIONS if last else StopReason.ANSWERED
                return Outcome(s.answers.accepted, reason, fallback=last), iteration
            self.ledger.check()
            messages.extend(tool_results)
            if observation or not tool_results:
                messages.append({"role": "user", "content": observation})
        partial = await partial_answer(s)
        return Outcome(partial, StopReason.MAX_ITERATIONS), budget.max_iterations + 1

    def _pipeline(self, s: Session, iteration: int) -> Pipeline | None:
        """This turn's pipeline (polyrlm.pipeline), when turns are pipelined
        (never with the native run_code tool: a reply may carry both)."""
        if not self.settings.pipelined or s.tools:
            return None

        async def run(code: str, first_line: int, part: int, last: bool) -> ExecResult:
            whole = last and part == 1
            return await execute_block(
                self, s, code, iteration, None if whole else (part, first_line, last)
            )

        def holds(prefix: str) -> bool:  # the last block again, perhaps: not run yet
            return s.last_block is not None and (s.last_block[0] + "\n").startswith(prefix.strip())

        env = s.env
        return Pipeline(
            env.fence_tags,
            lambda code: s.env.ready_statements(code),
            run,
            env.stops_at_error,
            env.part_separator,
            env.comment_prefixes,
            holds,
        )

    async def _root_call(
        self, s: Session, messages: list[dict[str, Any]], pipeline: Pipeline | None = None
    ) -> Reply:
        model, at_code_end = self._model(s), self.settings.stop_at_code_end
        cut = code_end if at_code_end else (None if pipeline is None else _no_cut)

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
                    cut=cut,
                    stop=[CODE_END_STOP] if at_code_end else (),
                    on_text=None if pipeline is None else pipeline.feed,
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
        self, s: Session, reply: Reply, iteration: int
    ) -> tuple[str, ExecResult | None, list[dict[str, Any]]]:
        results: list[dict[str, Any]] = []
        for call in reply.tool_calls:
            code, problem = run_code_argument(call)
            if code is None:
                results.append(tool_result(call, problem))
                continue
            if self._repeats(s, code, None):
                results.append(tool_result(call, _repeated_note(s)))
                continue
            result = await execute_block(self, s, code, iteration)
            s.last_block = (code.strip(), iteration)
            answered, note = s.answers.take(result, s.subcalls.exec_id)
            shown = observation(result, self.settings.budget.max_output_chars)
            s.last_output = shown
            results.append(tool_result(call, f"{shown}\n{note}" if note else shown))
            if answered:
                return "", result, results
            if self.ledger.exhausted is not None:
                break
        return "", None, results

    @staticmethod
    def _repeats(s: Session, code: str, pipeline: Pipeline | None) -> bool:
        """Whether ``code`` is the block that ran last, nothing of it run yet:
        a small model may send the same block turn after turn, and its
        output would not change (nothing ran in between)."""
        if s.last_block is None or code.strip() != s.last_block[0]:
            return False
        return pipeline is None or not pipeline.parts

    async def _run_reply(
        self, s: Session, reply: Reply, iteration: int, pipeline: Pipeline | None = None
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
            notes.insert(
                0,
                no_code_note(
                    s.profile,
                    env.fence_tags,
                    env.answer_code,
                    reply.text,
                    s.question,
                    s.last_block is not None,
                ),
            )
            return "\n".join(notes), None, []
        parts, ran = [], False
        for number, block in enumerate(runnable, 1):
            head = f"[block {number} of {len(runnable)}]\n" if len(runnable) > 1 else ""
            followed = number == 1 and pipeline is not None and bool(block.tag)
            if self._repeats(s, block.code, pipeline if followed else None):
                parts.append(head + _repeated_note(s))
                continue
            piped, ran = "", True
            if followed:  # what the stream followed
                assert pipeline is not None
                result, piped = await pipeline.finish(block.code)
            else:
                result = await execute_block(self, s, block.code, iteration)
            s.last_block = (block.code.strip(), iteration)
            answered, note = s.answers.take(result, s.subcalls.exec_id)
            shown = observation(result, self.settings.budget.max_output_chars)
            s.last_output = shown
            shown = f"{shown}\n{piped}" if piped else shown
            parts.append(head + (f"{shown}\n{note}" if note else shown))
            if answered:
                return "\n\n".join(parts), result, []
            if self.ledger.exhausted is not None:
                break
        if s.profile == "compact" and ran:
            parts.append(COMPACT_OUTPUT_NOTE)
        return "\n\n".join(notes + parts), None, []
