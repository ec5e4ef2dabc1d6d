"""A run's root conversation, rebuilt from its trajectory.

The trajectory keeps what the loop (:mod:`polyrlm.loop`) sent without
keeping each whole request: the first ``turn_started`` of a run carries its
system prompt, and each root ``model_called`` the newest message of its
turn (``prompt``) and the reply (``response``, ``tool_calls``). So the
conversation is: the system prompt; turn 1's prompt as a user message (the
question); then per turn the reply as the assistant's message
(:func:`polyrlm.turns.assistant_message`) and the next turn's prompt: a user
message (the observation), or, when the reply made native tool calls, one
``tool`` message per call (:func:`polyrlm.turns.tool_result`), the last
one's content being the prompt. The results of the calls before the last
are not recorded as prompts; they are rebuilt from the turn's
``code_executed`` events as the loop made them
(:func:`polyrlm.turns.observation`).

The conversation stops early (``Run.end`` says why) at a turn whose root
call failed, a turn whose history the loop compacted to fit the model's
window (what the model saw is then not the history: its prompt carries the
compaction note), a tool result that cannot be rebuilt, or the end of a
record cut short (a killed run: the turns that are whole are kept).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from polyrlm.config import DEFAULT_MAX_OUTPUT_CHARS
from polyrlm.events import (
    AnswerSet,
    CodeExecuted,
    Event,
    ModelCalled,
    RunFinished,
    RunStarted,
    TurnStarted,
)
from polyrlm.history import compaction_note
from polyrlm.prompts import ANSWER_INVALID_NOTE, RUN_CODE_TOOL, TOOL_CHANNEL_NOTE, run_code_tool
from polyrlm.records import ExecResult, Role, StopReason
from polyrlm.turns import assistant_entry, observation, run_code_argument, tool_result

__all__ = ["Message", "Run", "message_chars", "runs_of"]

Message = dict[str, Any]

_SENTINEL = "\x00N\x00"
_NUMBER = 987654321
#: The note the loop appends to the newest message of a compacted history.
_COMPACTED = re.compile(
    r"(?:\A|\n\n)"
    + re.escape(compaction_note(_NUMBER, _NUMBER)).replace(str(_NUMBER), r"\d+")
    + r"\Z"
)
#: The system prompt's note when the root was offered the run_code tool (its language).
_TOOL_NOTE = re.compile(
    re.escape(TOOL_CHANNEL_NOTE.format(tool=RUN_CODE_TOOL, language=_SENTINEL)).replace(
        re.escape(_SENTINEL), "(.+?)"
    )
)


@dataclass
class Run:
    """One run (a root or a child) of a trajectory and its rebuilt conversation."""

    run_id: str
    parent_run_id: str | None
    root_id: str
    depth: int
    question: str
    backend: str
    model: str
    #: The trajectory file it came from ("" for events given directly).
    source: str = ""
    #: The run's ``run_finished``: None when the record ends before it.
    finished: RunFinished | None = None
    #: system, user, assistant, observation(s), assistant, ...: every whole turn.
    messages: list[Message] = field(default_factory=list)
    #: Index in ``messages`` of each turn's reply (the assistant message).
    replies: list[int] = field(default_factory=list)
    #: Why the conversation stops where it does, when not at the run's last reply.
    end: str | None = None
    #: False when the run went on past ``messages`` (turns the record cannot give).
    complete: bool = True
    #: The tools the root was offered (OpenAI's function format), if any.
    tools: list[dict[str, Any]] | None = None
    #: Its sub-calls (``role`` sub), in order.
    sub_calls: list[ModelCalled] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        """The run finished with an answer (as the benchmark counts it: answered,
        or the last-turn fallback answer)."""
        done = self.finished
        return done is not None and (done.stop_reason == StopReason.ANSWERED or done.fallback)

    @property
    def stop_reason(self) -> str | None:
        return None if self.finished is None else str(self.finished.stop_reason)

    @property
    def answer(self) -> Any:
        return None if self.finished is None else self.finished.answer


def message_chars(message: Message) -> int:
    """Characters of a message: its text and its tool calls' names and arguments."""
    calls = message.get("tool_calls") or ()
    extra = sum(len(c["function"]["name"]) + len(c["function"]["arguments"]) for c in calls)
    return len(message.get("content") or "") + extra


def _assistant(call: ModelCalled) -> Message:
    return assistant_entry(call.response or "", call.tool_calls or ())


def _rebuilt_result(
    call: dict[str, str], executed: list[CodeExecuted], invalid: dict[str, list[str]], limit: int
) -> str | None:
    """The content the loop gave one tool call that is not the turn's last
    (None: the record lacks its execution)."""
    code, problem = run_code_argument(call)
    if code is None:
        return problem
    if not executed:
        return None
    done = executed.pop(0)
    result = ExecResult(
        output=done.output,
        error=done.error,
        truncated_chars=done.truncated_chars,
        restarted=done.restarted,
        timed_out=done.timed_out,
    )
    shown = observation(result, limit)
    if done.exec_id in invalid:
        errors = "\n".join(f"- {e}" for e in invalid[done.exec_id])
        shown += "\n" + ANSWER_INVALID_NOTE.format(errors=errors)
    return shown


@dataclass
class _Turn:
    iteration: int
    calls: list[ModelCalled] = field(default_factory=list)


def _tools(system: str, settings: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    options = (settings or {}).get("root_options") or {}
    if isinstance(options.get("tools"), list):  # the caller's own tools went instead
        return list(options["tools"])
    found = _TOOL_NOTE.search(system)
    return [run_code_tool(found.group(1))] if found else None


def _build(run: Run, events: list[Event], settings: dict[str, Any] | None, limit: int) -> None:
    system: str | None = None
    turns: list[_Turn] = []
    executed: dict[int, list[CodeExecuted]] = {}
    invalid: dict[str, list[str]] = {}
    for event in events:
        if isinstance(event, TurnStarted):
            system = system or event.system_prompt
            turns.append(_Turn(event.iteration))
        elif isinstance(event, ModelCalled):
            if event.role == Role.SUB:
                run.sub_calls.append(event)
            elif turns:
                turns[-1].calls.append(event)
        elif isinstance(event, CodeExecuted):
            executed.setdefault(event.iteration, []).append(event)
        elif isinstance(event, AnswerSet) and not event.valid and event.exec_id:
            invalid[event.exec_id] = list(event.errors or ())
        elif isinstance(event, RunFinished):
            run.finished = event
    if system is None:
        run.end = "no system prompt recorded (a trajectory older than schema version 3)"
        run.complete = False
        return
    run.tools = _tools(system, settings)
    messages: list[Message] = [{"role": "system", "content": system}]
    previous: tuple[int, ModelCalled] | None = None
    for turn in turns:
        if not turn.calls:  # killed while waiting, or not sent: the budget ended first
            if run.finished is None:
                run.end = f"the record ends in turn {turn.iteration}, before its reply"
                run.complete = False
            else:
                run.end = f"the root call of turn {turn.iteration} was not made"
            break
        call = turn.calls[-1]  # earlier ones were refused as too long, then retried
        if call.response is None:
            run.end = f"the root call of turn {turn.iteration} failed"
            break
        if _COMPACTED.search(call.prompt):
            run.end = f"turn {turn.iteration}'s history was compacted to fit the model's window"
            run.complete = False
            break
        if previous is not None and previous[1].tool_calls:
            pending = list(executed.get(previous[0], []))
            *earlier, last = previous[1].tool_calls
            for tool_call in earlier:
                content = _rebuilt_result(tool_call, pending, invalid, limit)
                if content is None:
                    run.end = f"a tool result of turn {previous[0]} is not in the record"
                    run.complete = False
                    break
                messages.append(tool_result(tool_call, content))
            if run.end is not None:
                break
            messages.append(tool_result(last, call.prompt))
        else:
            messages.append({"role": "user", "content": call.prompt})
        messages.append(_assistant(call))
        run.replies.append(len(messages) - 1)
        previous = (turn.iteration, call)
    if run.end is None and run.finished is None:
        run.end = "the record ends early (the run did not finish)"
        run.complete = False
    run.messages = messages[: run.replies[-1] + 1] if run.replies else messages


def runs_of(events: Sequence[Event], source: str = "") -> list[Run]:
    """Every run of ``events`` (one trajectory, or several trees' events
    interleaved) with its conversation, in the order the runs started."""
    starts: dict[str, RunStarted] = {}
    own: dict[str, list[Event]] = {}
    for event in events:
        if isinstance(event, RunStarted) and event.run_id not in starts:
            starts[event.run_id] = event
        own.setdefault(event.run_id, []).append(event)
    root_of: dict[str, str] = {}
    runs = []
    for run_id, start in starts.items():
        parent = start.parent_run_id
        root_of[run_id] = run_id if parent is None else root_of.get(parent, parent)
        root_start = starts.get(root_of[run_id])
        settings = root_start.settings if root_start is not None else None
        budget = (settings or {}).get("budget") or {}
        limit = int(budget.get("max_output_chars") or DEFAULT_MAX_OUTPUT_CHARS)
        run = Run(
            run_id=run_id,
            parent_run_id=parent,
            root_id=root_of[run_id],
            depth=start.depth,
            question=start.question,
            backend=start.backend,
            model=start.model,
            source=source,
        )
        _build(run, own[run_id], settings, limit)
        runs.append(run)
    return runs
