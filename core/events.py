"""Event records: every step of a run, as it happens.

Each event carries ``schema_version``, a kind (``event``), the run it belongs
to and links to its parent (the run that started a child run, the execution
that made a sub-call), so a trajectory can be shown as a tree and replayed.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from polyrlm.config import SCHEMA_VERSION
from polyrlm.records import Frozen, Role, StopReason, Tally

__all__ = [
    "AnswerSet",
    "BatchStarted",
    "CodeExecuted",
    "Event",
    "EventBase",
    "ModelCalled",
    "RunFinished",
    "RunStarted",
    "ToolCalled",
    "TurnStarted",
    "event_adapter",
]


class EventBase(Frozen):
    schema_version: int = SCHEMA_VERSION
    ts: float = Field(default_factory=time.time, description="Unix time of the event.")
    run_id: str = Field(description="The loop (root or child) this event belongs to.")


class RunStarted(EventBase):
    event: Literal["run_started"] = "run_started"
    parent_run_id: str | None = None
    parent_exec_id: str | None = Field(None, description="The execution that started this child.")
    depth: int
    question: str
    backend: str
    model: str
    sub_model: str
    context_meta: dict[str, Any]
    settings: dict[str, Any] | None = Field(
        None, description="Root run: budget, backend config and model options (no credentials)."
    )
    context_source: dict[str, Any] | None = Field(
        None, description="Root run: the context itself when small, else a fingerprint (replay)."
    )


class TurnStarted(EventBase):
    event: Literal["turn_started"] = "turn_started"
    depth: int
    iteration: int = Field(description="1-based root turn; the root call follows.")
    system_prompt: str | None = Field(
        None,
        description=(
            "First turn: the root's system prompt. With each root call's newest message and "
            "reply it gives the whole conversation (polyrlm export)."
        ),
    )


class BatchStarted(EventBase):
    event: Literal["batch_started"] = "batch_started"
    batch_id: str
    exec_id: str | None = Field(None, description="The execution that made this batch.")
    depth: int = Field(description="Depth of the sub-calls.")
    size: int = Field(description="Prompts in the batch.")


class ModelCalled(EventBase):
    event: Literal["model_called"] = "model_called"
    call_id: str
    exec_id: str | None = Field(None, description="The execution that made this sub-call.")
    batch_id: str | None = Field(None, description="The llm_batch this sub-call belongs to.")
    role: Role
    depth: int
    model: str
    prompt: str = Field(description="Sub-call: the prompt. Root call: the newest message only.")
    request_digest: str = Field(description="sha256 of the whole request, for replay.")
    response: str | None
    tool_calls: list[dict[str, str]] | None = Field(
        None, description="Native tool calls of a root reply: id, name, arguments (JSON)."
    )
    prompt_tokens: int = 0
    cached_prompt_tokens: int = Field(0, description="Prompt tokens served from the cache.")
    completion_tokens: int = 0
    cost_usd: float | None = None
    latency_s: float = 0.0
    cached: bool = False
    error: str | None = None
    requests: int = Field(
        1, description="Requests sent for this call, retries included (0: cached, not sent)."
    )


class CodeExecuted(EventBase):
    event: Literal["code_executed"] = "code_executed"
    exec_id: str
    iteration: int
    language: str
    code: str
    output: str
    error: str | None
    duration_s: float
    truncated_chars: int = 0
    timed_out: bool = False
    restarted: bool = False
    part: int | None = Field(
        None,
        description="Pipelined turns: the 1-based part of the block this code is (its "
        "statements ran as the root wrote them); None: the block ran whole.",
    )
    first_line: int = Field(1, description="The block's line this code starts at.")


class ToolCalled(EventBase):
    event: Literal["tool_called"] = "tool_called"
    call_id: str
    exec_id: str | None = Field(None, description="The execution that called the tool.")
    tool: str
    arguments: dict[str, Any] = Field(description="The arguments as sent (JSON).")
    arguments_digest: str = Field(description="sha256 of the arguments' JSON, for replay.")
    result: Any = Field(None, description="The result as JSON data; None when it failed.")
    error: str | None = None
    duration_s: float = 0.0


class AnswerSet(EventBase):
    event: Literal["answer_set"] = "answer_set"
    exec_id: str | None = Field(None, description="The execution that set the answer.")
    answer: Any
    valid: bool = Field(True, description="False: it did not validate against the answer type.")
    errors: list[str] | None = Field(None, description="Why it did not validate.")


class RunFinished(EventBase):
    event: Literal["run_finished"] = "run_finished"
    stop_reason: StopReason
    answer: Any
    fallback: bool = False
    error: str | None = None
    iterations: int = 0
    usage: Tally = Field(description="Usage of the whole tree so far, when this run ended.")


Event = Annotated[
    RunStarted
    | TurnStarted
    | ModelCalled
    | BatchStarted
    | CodeExecuted
    | ToolCalled
    | AnswerSet
    | RunFinished,
    Field(discriminator="event"),
]

#: Parses one trajectory line (a dict or JSON) back into its event record.
event_adapter: TypeAdapter[Event] = TypeAdapter(Event)
