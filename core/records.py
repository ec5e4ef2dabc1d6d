"""Frozen pydantic records: budget, usage, execution results, state, result."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from polyrlm.config import DEFAULT_MAX_DEPTH, DEFAULT_MAX_ITERATIONS, DEFAULT_MAX_OUTPUT_CHARS

__all__ = [
    "REPLAY_QUOTE_CHARS",
    "Budget",
    "Divergence",
    "ExecResult",
    "Frozen",
    "ReplayReport",
    "Role",
    "State",
    "StopReason",
    "Tally",
    "Usage",
    "VarInfo",
]


class Frozen(BaseModel):
    """Base of every record: immutable, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Role(StrEnum):
    """Who made a model call."""

    ROOT = "root"
    SUB = "sub"


class StopReason(StrEnum):
    """Why a run ended. Every :class:`Result` has one."""

    ANSWERED = "answered"
    MAX_ITERATIONS = "max_iterations"
    MAX_MODEL_CALLS = "max_model_calls"
    MAX_TOKENS = "max_tokens"
    MAX_COST_USD = "max_cost_usd"
    MAX_SECONDS = "max_seconds"
    #: Ctrl-C (SIGINT) or SIGTERM, or the caller cancelled the run.
    INTERRUPTED = "interrupted"
    ERROR = "error"


class Budget(Frozen):
    """Limits shared by a whole recursion tree (root, sub-calls, child RLMs).

    ``None`` means unlimited. Every request (each retry too) is admitted
    before it is sent, holding its worst case under a token or cost budget
    (:mod:`polyrlm.ledger` states the bound); ``max_seconds`` is one
    deadline for the whole tree, in-flight calls and code blocks included.
    """

    max_iterations: int = Field(
        DEFAULT_MAX_ITERATIONS, ge=1, description="Root turns per loop (each child loop too)."
    )
    max_model_calls: int | None = Field(
        None, ge=1, description="Requests to providers in the whole tree, each retry included."
    )
    max_tokens: int | None = Field(
        None, ge=1, description="Prompt + completion tokens in the tree."
    )
    max_cost_usd: float | None = Field(None, gt=0, description="Known cost in US dollars.")
    max_seconds: float | None = Field(None, gt=0, description="Wall-clock seconds from the start.")
    max_depth: int = Field(
        DEFAULT_MAX_DEPTH,
        ge=0,
        description="Levels below the root: 0 no sub-calls, 1 sub-models, 2 child RLMs, ...",
    )
    max_output_chars: int = Field(
        DEFAULT_MAX_OUTPUT_CHARS, ge=100, description="Characters of one exec's output shown."
    )


class Tally(Frozen):
    """Counts of model calls."""

    calls: int = Field(0, description="Calls answered (cached ones included).")
    cached_calls: int = Field(0, description="Calls answered from the response cache.")
    failed_calls: int = Field(0, description="Calls that failed after retries or were refused.")
    requests: int = Field(
        0, description="Requests sent to a provider, each retry included (max_model_calls)."
    )
    prompt_tokens: int = Field(0, description="Prompt tokens reported by the provider.")
    cached_prompt_tokens: int = Field(
        0, description="Of the prompt tokens, those the provider served from its prompt cache."
    )
    completion_tokens: int = Field(0, description="Completion tokens reported by the provider.")
    cost_usd: float = Field(0.0, description="Sum of the known costs.")
    unpriced_calls: int = Field(0, description="Calls whose model has no known price.")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Tally) -> Tally:
        return Tally(**{k: getattr(self, k) + getattr(other, k) for k in Tally.model_fields})


class Usage(Frozen):
    """Usage of a whole recursion tree, split by role and by depth."""

    total: Tally = Field(default_factory=Tally, description="Every call of the tree.")
    by_role: dict[Role, Tally] = Field(default_factory=dict, description="Root vs sub calls.")
    by_depth: dict[int, Tally] = Field(default_factory=dict, description="Per recursion depth.")
    iterations: int = Field(0, description="Root turns across the tree.")
    executions: int = Field(0, description="Code blocks executed across the tree.")
    elapsed_s: float = Field(0.0, description="Wall-clock seconds since the run started.")


class VarInfo(Frozen):
    """One variable, table or file of an environment."""

    name: str
    type: str
    size: int | None = Field(None, description="Length, rows or bytes, as fits the type.")


class State(Frozen):
    """What an environment holds, and its answer."""

    variables: tuple[VarInfo, ...] = ()
    answer: Any = Field(None, description="answer['content'] as the environment holds it.")
    answer_ready: bool = False


class ExecResult(Frozen):
    """The outcome of one :meth:`Environment.execute`."""

    output: str = Field("", description="stdout, stderr and the last value, interleaved.")
    error: str | None = Field(None, description="Traceback or error text; None when it ran.")
    truncated_chars: int = Field(0, description="Characters dropped at capture.")
    duration_s: float = 0.0
    answer_ready: bool = Field(False, description="The answer was marked ready by this code.")
    answer: Any = None
    restarted: bool = Field(False, description="The environment was restarted; state was lost.")
    timed_out: bool = False


class Divergence(Frozen):
    """Where a replay came out differently from its record, and why."""

    step: str = Field(description="The step, e.g. 'root step 2 (turn 2)'.")
    position: int | None = Field(
        None, description="1-based position of the recorded event (its line in a JSONL file)."
    )
    what: str = Field(
        description="code, output, error, answer, stop_reason, request, missing or extra."
    )
    why: str
    recorded: Any = None
    replayed: Any = None


class ReplayReport(Frozen):
    """The outcome of a replay, step by step against the record."""

    steps: int = Field(description="Recorded steps (code blocks) compared.")
    matching_steps: int = Field(description="Steps whose code, output, error and answer matched.")
    recorded_answer: Any = None
    replayed_answer: Any = None
    recorded_stop_reason: str | None = None
    replayed_stop_reason: str | None = None
    divergences: tuple[Divergence, ...] = Field((), description="Earliest in the record first.")
    record_ended_early: bool = Field(
        False,
        description="The recorded root run has no run_finished (a killed run): only the "
        "prefix the record has was compared, and nothing after it counts as a divergence.",
    )
    record_lines: int | None = Field(
        None, description="Line of the record's last event (1-based; its position in a list)."
    )
    incomplete_line: int | None = Field(
        None, description="A last line of the file that is not a whole event (a killed writer)."
    )
    record_notes: tuple[str, ...] = Field(
        (), description="What to know about the record itself: that it ends early, a line ignored."
    )

    @property
    def identical(self) -> bool:
        """Every step, the answer and the stop reason came out the same (as
        far as the record goes, when it ends early)."""
        return not self.divergences

    @property
    def first(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None

    def summary(self) -> str:
        """A few lines for people: the verdict, how the record ends (when
        early), then the first divergence."""
        notes = list(self.record_notes)
        if self.identical:
            head = (
                f"replay identical as far as the record goes: {self.steps} "
                f"step{'' if self.steps == 1 else 's'}"
                if self.record_ended_early  # no recorded answer or stop to compare
                else f"replay identical: {self.steps} steps, answer {self.replayed_answer!r}, "
                f"stop {self.replayed_stop_reason}"
            )
            return "\n".join([head, *notes])
        d = self.divergences[0]
        where = f" (record line {d.position})" if d.position else ""
        lines = [
            f"replay diverged: {self.matching_steps} of {self.steps} steps matched, "
            f"{len(self.divergences)} divergence(s)",
            *notes,
            f"first at {d.step}{where}: {d.what} differs",
            f"  why: {d.why}",
        ]
        if d.recorded is not None or d.replayed is not None:
            lines += [f"  recorded: {_cut(d.recorded)}", f"  replayed: {_cut(d.replayed)}"]
        return "\n".join(lines)


#: Characters of a recorded or replayed text (an output, a prompt) quoted in a
#: replay's report; the whole texts stay in the trajectories.
REPLAY_QUOTE_CHARS = 300


def _cut(value: Any, limit: int = REPLAY_QUOTE_CHARS) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text)} chars]"
