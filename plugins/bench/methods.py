"""The methods a benchmark compares, each giving one :class:`RunRecord`:

* ``strategy``: a scripted root program (:mod:`polyrlm.plugins.bench.strategy`)
  replayed through the real loop by a ``ScriptedModel``; no root model;
* ``rlm``: the real loop with a real root model (any litellm model);
* ``base``: the context put into one prompt, cut to the model's window (the
  paper's baseline), sent through the broker (retries, usage, cost, guard).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.errors import ConfigError, PolyrlmError, PromptTooLong
from polyrlm.events import CodeExecuted
from polyrlm.plugins.bench.strategy import MAP_CHUNK_CHARS, Strategy
from polyrlm.plugins.bench.table_text import context_text
from polyrlm.plugins.bench.task import Instance, Task
from polyrlm.records import Budget, Role, StopReason
from polyrlm.result import Result

if TYPE_CHECKING:
    from polyrlm.rlm import RLM

__all__ = [
    "BASE_CUT_ATTEMPTS",
    "BASE_RESERVE_TOKENS",
    "BASE_SHRINK",
    "DEFAULT_WINDOW_TOKENS",
    "RunRecord",
    "record_result",
    "rlm_for",
    "rlm_question",
    "run_base",
    "run_rlm",
    "run_strategy",
    "strategy_params",
]

#: Window assumed for a model litellm does not know (override with ``window=``).
DEFAULT_WINDOW_TOKENS = 128_000
#: Tokens of the window kept free for the question and the reply (``base``).
BASE_RESERVE_TOKENS = 2_000
#: Factor the kept context shrinks by when the guard finds the prompt too long.
BASE_SHRINK = 0.8
#: Prompts tried before ``base`` gives up on fitting the window.
BASE_CUT_ATTEMPTS = 6
#: Characters of an answer or an error kept in a record.
RECORD_TEXT_CHARS = 300


class RunRecord(BaseModel):
    """One method on one instance (and backend): what it scored and cost."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = Field(description="Task name.")
    backend: str = Field(description="Backend name; '-' for the base method.")
    method: str = Field(description="strategy, rlm or base.")
    strategy: str | None = Field(None, description="Strategy name, for the strategy method.")
    size: int = Field(description="Requested context size, in tokens.")
    tokens: int = Field(description="Estimated tokens of the generated context.")
    seed: int = Field(description="Seed of the instance.")
    status: str = Field(
        description="ok, no answer, error, unavailable, needs --sub-model, or no <lang> code."
    )
    detail: str = Field("", description="Why it did not run, or its first error.")
    note: str = Field("", description="What the reader should know (e.g. a strategy's prior).")
    score: float | None = Field(None, description="Score in [0, 1]; None when it did not run.")
    scores: dict[str, float] = Field(
        default_factory=dict, description="Every metric of the task (Task.scores), by name."
    )
    answer: Any = Field(None, description="The answer given (cut when long).")
    expected: Any = Field(None, description="The gold answer (cut when long).")
    root_tokens: int = Field(0, description="Prompt + completion tokens of root calls.")
    sub_tokens: int = Field(0, description="Prompt + completion tokens of sub-calls.")
    cost_usd: float = Field(0.0, description="Known cost of every call.")
    unpriced_calls: int = Field(0, description="Calls whose model has no known price.")
    wall_s: float = Field(0.0, description="Seconds, environment start and load included.")
    iterations: int = Field(0, description="Root turns.")
    sub_calls: int = Field(0, description="Sub-model calls.")
    stop_reason: str | None = Field(None, description="The run's stop reason.")
    run_id: str | None = Field(None, description="The root run's id (in its trajectory).")
    trajectory: str | None = Field(None, description="The run's trajectory file (--log-dir).")


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > RECORD_TEXT_CHARS:
        return value[:RECORD_TEXT_CHARS] + f" ... [{len(value):,} chars]"
    if isinstance(value, list) and len(str(value)) > RECORD_TEXT_CHARS:
        return f"{str(value)[:RECORD_TEXT_CHARS]} ... [{len(value):,} items]"
    return value


def run_record(
    instance: Instance, backend: str, method: str, status: str, detail: str = "", **extra: Any
) -> RunRecord:
    """A record of an instance on a backend: a run that did not happen and why,
    or (with the run's figures in ``extra``) one that did."""
    return RunRecord(
        task=instance.task,
        backend=backend,
        method=method,
        size=instance.size,
        tokens=instance.tokens,
        seed=instance.seed,
        status=status,
        detail=detail,
        expected=_cut(instance.expected),
        **extra,
    )


def record_result(
    task: Task,
    instance: Instance,
    backend: str,
    method: str,
    result: Result,
    wall_s: float,
    **extra: Any,
) -> RunRecord:
    usage = result.usage
    root = usage.by_role.get(Role.ROOT)
    sub = usage.by_role.get(Role.SUB)
    answered = result.stop_reason == StopReason.ANSWERED or result.fallback
    errors = [e.error for e in result.trajectory if isinstance(e, CodeExecuted) and e.error]
    detail = result.error or (errors[0] if errors else "")
    return run_record(
        instance,
        backend,
        method,
        "ok" if answered else ("error" if result.error else "no answer"),
        _cut(detail.strip()),
        score=task.score(instance, result.answer) if answered else 0.0,
        scores=task.scores(instance, result.answer) if answered else {},
        answer=_cut(result.answer),
        root_tokens=root.total_tokens if root else 0,
        sub_tokens=sub.total_tokens if sub else 0,
        cost_usd=usage.total.cost_usd,
        unpriced_calls=usage.total.unpriced_calls,
        wall_s=round(wall_s, 4),
        iterations=usage.iterations,
        sub_calls=sub.calls + sub.failed_calls if sub else 0,
        stop_reason=str(result.stop_reason),
        run_id=result.trajectory[0].run_id if result.trajectory else None,
        **extra,
    )


def strategy_params(instance: Instance) -> dict[str, Any]:
    """The instance's parameters plus the ones every strategy may use."""
    return {
        "question": instance.question,
        "chunk_chars": MAP_CHUNK_CHARS,
        "order_col": "doc_id" if isinstance(instance.context, list) else "line_no",
        "answer_format": "Reply with the answer only.",
        **instance.params,
    }


def run_strategy(
    task: Task,
    instance: Instance,
    strategy: Strategy,
    backend: str,
    *,
    sub_model: str | None = None,
    sub_options: Mapping[str, Any] | None = None,
    max_concurrency: int | None = None,
    log: str | Path | None = None,
) -> RunRecord:
    """Replay ``strategy`` on ``backend`` through the real loop; ``log``: write
    the trajectory there as JSONL."""
    from polyrlm.registry import get_registry
    from polyrlm.rlm import RLM
    from polyrlm.testing.scripted import ScriptedModel

    method, extra = "strategy", {"strategy": strategy.name, "note": strategy.note}
    if log is not None:
        extra["trajectory"] = str(log)
    cls = get_registry().get(backend)
    if cls.language not in strategy.code:
        return run_record(instance, backend, method, f"no {cls.language} code", **extra)
    if strategy.needs_sub_model and not sub_model:
        return run_record(instance, backend, method, "needs --sub-model", **extra)
    fence = cls.fence_tags[0]
    blocks = [
        f"```{fence}\n{b}\n```" for b in strategy.blocks(cls.language, strategy_params(instance))
    ]
    turns = iter(blocks)
    root = ScriptedModel(lambda messages: next(turns, "No further steps."))
    options: dict[str, Any] = (
        {} if max_concurrency is None else {"max_concurrency": max_concurrency}
    )
    rlm = RLM(
        root.model,
        sub_model,
        backend=backend,
        backend_config=task.backend_config(backend, instance),
        budget=Budget(max_iterations=len(blocks)),
        sub_model_options=dict(sub_options or {}),
        log=log,
        **options,
    )
    started = time.perf_counter()
    result = rlm.completion(instance.question, instance.context)
    return record_result(
        task, instance, backend, method, result, time.perf_counter() - started, **extra
    )


def rlm_for(
    backend: str,
    *,
    model: str,
    sub_model: str | None = None,
    options: Mapping[str, Any] | None = None,
    sub_options: Mapping[str, Any] | None = None,
    budget: Budget | None = None,
    max_concurrency: int | None = None,
    log: str | Path | None = None,
) -> RLM:
    """The RLM the ``rlm`` method runs on ``backend``."""
    from polyrlm.rlm import RLM

    extra: dict[str, Any] = {} if max_concurrency is None else {"max_concurrency": max_concurrency}
    return RLM(
        model,
        sub_model,
        backend=backend,
        budget=budget,
        sub_model_options=dict(sub_options) if sub_options is not None else None,
        log=log,
        **extra,
        **dict(options or {}),
    )


def rlm_question(instance: Instance) -> str:
    """The question the ``rlm`` method asks: the instance's, and its answer format."""
    answer_format = instance.params.get("answer_format", "Reply with the answer only.")
    return f"{instance.question}\n{answer_format}"


def run_rlm(
    task: Task,
    instance: Instance,
    backend: str,
    *,
    log: str | Path | None = None,
    **settings: Any,
) -> RunRecord:
    """The real loop: ``model`` as the root, ``sub_model`` for sub-calls
    (the settings of :func:`rlm_for`); ``log``: write the trajectory there."""
    config = task.backend_config(backend, instance)
    options = {
        **dict(settings.pop("options", None) or {}),
        **({"backend_config": config} if config else {}),
    }
    rlm = rlm_for(backend, log=log, options=options, **settings)
    started = time.perf_counter()
    result = rlm.completion(rlm_question(instance), instance.context)
    kept = {} if log is None else {"trajectory": str(log)}
    return record_result(
        task, instance, backend, "rlm", result, time.perf_counter() - started, **kept
    )


async def _base_call(
    task: Task,
    instance: Instance,
    model: str,
    options: Mapping[str, Any],
    window: int | None,
) -> tuple[str, float, Any]:
    from polyrlm.broker import Broker
    from polyrlm.ledger import Ledger

    ledger = Ledger(Budget())
    broker = Broker(ledger, lambda event: None, windows={model: window} if window else None)
    tokens = broker.window(model) or DEFAULT_WINDOW_TOKENS
    if broker.window(model) is None:  # unknown model: guard against the assumed window
        broker = Broker(ledger, lambda event: None, windows={model: tokens})
    instruction = task.base_instruction(instance)
    keep = max(0, (tokens - BASE_RESERVE_TOKENS) * CHARS_PER_TOKEN - len(instruction) - 2)
    text = context_text(instance.context, keep + 1)
    whole = instance.chars
    for _ in range(BASE_CUT_ATTEMPTS):
        kept = text[:keep]
        prompt = f"{kept}\n\n{instruction}" if kept else instruction
        try:
            reply = await broker.call(
                [{"role": "user", "content": prompt}],
                model=model,
                role=Role.ROOT,
                depth=0,
                run_id="base",
                options=options,
            )
        except PromptTooLong:
            keep = int(keep * BASE_SHRINK)
            continue
        # A table's size is its file's bytes, not its text's: a cut one stays below 100 %.
        share = 1.0 if len(text) <= keep else min(0.999, keep / max(1, whole))
        return reply, share, ledger.usage()
    raise ConfigError(f"base: no prompt fit the {tokens}-token window of {model}")


def run_base(
    task: Task,
    instance: Instance,
    *,
    model: str,
    options: Mapping[str, Any] | None = None,
    window: int | None = None,
) -> RunRecord:
    """The context (cut to ``model``'s window, its head kept) and the question
    in one prompt; ``window`` overrides litellm's figure for the model."""
    started = time.perf_counter()
    try:
        reply, kept, usage = asyncio.run(
            _base_call(task, instance, model, dict(options or {}), window)
        )
    except PolyrlmError as exc:
        return run_record(instance, "-", "base", "error", _cut(str(exc)))
    note = "" if kept >= 1.0 else f"context cut to its first {kept:.0%}"
    return RunRecord(
        task=instance.task,
        backend="-",
        method="base",
        size=instance.size,
        tokens=instance.tokens,
        seed=instance.seed,
        status="ok",
        note=note,
        score=task.score(instance, reply),
        scores=task.scores(instance, reply),
        answer=_cut(reply),
        expected=_cut(instance.expected),
        root_tokens=usage.total.total_tokens,
        cost_usd=usage.total.cost_usd,
        unpriced_calls=usage.total.unpriced_calls,
        wall_s=round(time.perf_counter() - started, 4),
        iterations=1,
        stop_reason=str(StopReason.ANSWERED),
    )
