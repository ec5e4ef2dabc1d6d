"""What the MCP tools take and return: the budget a client may ask for (and
how it is clamped to the server's), a run's answer, the backends."""

from __future__ import annotations

from typing import Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polyrlm.errors import ConfigError
from polyrlm.events import RunStarted
from polyrlm.records import Budget
from polyrlm.result import Result

__all__ = [
    "ASKABLE_LIMITS",
    "AskBudget",
    "AskResult",
    "BackendInfo",
    "BackendList",
    "Limits",
    "UsageSummary",
    "ask_result",
    "clamp",
    "summary_text",
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AskBudget(_Record):
    """Limits a client may set for one run: each only lowers the server's
    own (a value above it is clamped to it, and named in ``clamped``)."""

    max_iterations: int | None = Field(None, ge=1, description="Root turns.")
    max_model_calls: int | None = Field(
        None, ge=1, description="Model requests in the run's whole tree, each retry included."
    )
    max_tokens: int | None = Field(None, ge=1, description="Prompt + completion tokens.")
    max_cost_usd: float | None = Field(None, gt=0, description="Known cost in US dollars.")
    max_seconds: float | None = Field(None, gt=0, description="Wall-clock seconds.")


#: The :class:`~polyrlm.Budget` fields a client may lower (those of :class:`AskBudget`).
ASKABLE_LIMITS = tuple(AskBudget.model_fields)


class Limits(_Record):
    """The limits a run had (``null``: unlimited)."""

    max_iterations: int = Field(description="Root turns.")
    max_model_calls: int | None = Field(description="Model requests in the tree.")
    max_tokens: int | None = Field(description="Prompt + completion tokens.")
    max_cost_usd: float | None = Field(description="US dollars.")
    max_seconds: float | None = Field(description="Wall-clock seconds.")


def clamp(server: Budget, asked: AskBudget | None) -> tuple[Budget, tuple[str, ...]]:
    """The server's budget lowered where ``asked`` is lower; the names of
    the asked limits that were above the server's (and so not applied)."""
    if asked is None:
        return server, ()
    update: dict[str, Any] = {}
    clamped: list[str] = []
    for name, value in asked.model_dump(exclude_none=True).items():
        limit = getattr(server, name)
        if limit is not None and value > limit:
            clamped.append(name)
        else:
            update[name] = value
    try:  # the Budget's bounds are the one source of truth
        budget = Budget(**{**server.model_dump(), **update})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"bad budget.{first['loc'][0]}: {first['msg']}") from None
    return budget, tuple(clamped)


class UsageSummary(_Record):
    """What a run spent (its whole tree: root, sub-calls, child runs)."""

    model_calls: int = Field(description="Calls answered (cached ones included).")
    requests: int = Field(description="Requests sent to the provider, each retry included.")
    failed_calls: int = Field(description="Calls that failed after retries or were refused.")
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = Field(description="Sum of the known costs.")
    unpriced_calls: int = Field(description="Calls whose model has no known price.")
    iterations: int = Field(description="Root turns across the tree.")
    executions: int = Field(description="Code blocks executed.")
    elapsed_s: float = Field(description="Wall-clock seconds.")


class AskResult(_Record):
    """One run's outcome."""

    answer: Any = Field(
        description="The answer the run set (text, or JSON when answer_schema was given); "
        "null when it stopped without one."
    )
    stop_reason: str = Field(
        description="answered, max_iterations, max_model_calls, max_tokens, max_cost_usd, "
        "max_seconds, interrupted or error."
    )
    fallback: bool = Field(description="The answer came from the last-chance turn.")
    error: str | None = Field(description="Why the run failed, when stop_reason is error.")
    backend: str = Field(description="The environment the model's code ran in.")
    run_id: str | None = Field(description="The root run's id (its trajectory file's name).")
    limits: Limits = Field(description="The limits the run had, after clamping.")
    clamped: list[str] = Field(
        description="Asked limits above the server's own: the server's were kept."
    )
    usage: UsageSummary


def _json_safe(value: Any) -> Any:
    """``value`` as plain JSON data (anything else as its text)."""
    return pydantic_core.from_json(pydantic_core.to_json(value, fallback=str))


def ask_result(result: Result, backend: str, budget: Budget, clamped: tuple[str, ...]) -> AskResult:
    total = result.usage.total
    root = next((e for e in result.trajectory if isinstance(e, RunStarted) and not e.depth), None)
    return AskResult(
        answer=_json_safe(result.answer),
        stop_reason=str(result.stop_reason),
        fallback=result.fallback,
        error=result.error,
        backend=backend,
        run_id=root.run_id if root is not None else None,
        limits=Limits(**{name: getattr(budget, name) for name in Limits.model_fields}),
        clamped=list(clamped),
        usage=UsageSummary(
            model_calls=total.calls,
            requests=total.requests,
            failed_calls=total.failed_calls,
            prompt_tokens=total.prompt_tokens,
            completion_tokens=total.completion_tokens,
            cost_usd=total.cost_usd,
            unpriced_calls=total.unpriced_calls,
            iterations=result.usage.iterations,
            executions=result.usage.executions,
            elapsed_s=round(result.usage.elapsed_s, 3),
        ),
    )


def summary_text(outcome: AskResult) -> str:
    """The text content of an ``rlm_ask`` result: the answer, then one
    line each for how it ended and what it spent."""
    answer = outcome.answer
    if answer is None:
        shown = "(no answer)"
    elif isinstance(answer, str):
        shown = answer
    else:
        shown = pydantic_core.to_json(answer).decode()
    usage = outcome.usage
    lines = [
        shown,
        f"stop: {outcome.stop_reason}" + (" (fallback answer)" if outcome.fallback else ""),
        f"backend: {outcome.backend}; iterations: {usage.iterations}; "
        f"model calls: {usage.model_calls}; tokens: {usage.prompt_tokens} in, "
        f"{usage.completion_tokens} out; cost: ${usage.cost_usd:.4f}; "
        f"time: {usage.elapsed_s:.2f} s",
    ]
    if outcome.clamped:
        lines.append(f"clamped to the server's limits: {', '.join(outcome.clamped)}")
    if outcome.error:
        lines.append(f"error: {outcome.error}")
    return "\n".join(lines)


class BackendInfo(_Record):
    """One registered backend."""

    name: str
    description: str
    installed: bool = Field(description="Its dependencies are installed here.")
    allowed: bool = Field(description="Clients of this server may choose it.")
    default: bool = Field(description="Used when rlm_ask names no backend.")
    sandboxed: bool | None = Field(
        description="The model's code runs isolated from this machine (null: not installed)."
    )
    install: str | None = Field(description="What installs it, when it is not installed.")


class BackendList(_Record):
    """The registered backends, by name."""

    backends: list[BackendInfo]
    default: str = Field(description="The backend rlm_ask uses when none is named.")
