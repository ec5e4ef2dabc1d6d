"""Many independent runs at once: :meth:`RLM.batch`.

Each question is one job: a whole completion with its own environment and
its own broker and ledger, sharing nothing with the others but the results
it returns. An executor runs the jobs: ``"serial"`` (one after another, in
this process), ``"local"`` (the default: a pool of worker processes on this
machine) or one a plugin registers through ``register_executors`` (``"ray"``:
a Ray instance or cluster). At most ``executor.slots`` jobs are in flight;
a job starts only while the batch's ``total_budget`` has room, so the
total can be overshot by the jobs already running, never by one started
after it ran out. Results come back in input order; a job that fails
(a context that cannot be read, a crashed worker) is a ``Result`` with
stop reason ``error``, never an exception that loses the others.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import Field

from polyrlm.errors import ConfigError
from polyrlm.records import Budget, Frozen, StopReason, Tally, Usage
from polyrlm.result import Result


class Runner(Protocol):
    """What a job runs with: an :class:`~polyrlm.rlm.RLM` (picklable)."""

    def with_log(self, log: Path | None) -> Runner:
        """The same, writing its trajectory to ``log``."""
        ...

    def completion(self, question: str, context: Any = None) -> Result:
        """One whole run."""
        ...


__all__ = [
    "BATCH_MAX_WORKERS",
    "TOTAL_FIELDS",
    "BatchResult",
    "Executor",
    "Job",
    "LocalExecutor",
    "Runner",
    "SerialExecutor",
    "check_total_budget",
    "failed_result",
    "run_batch",
    "run_job",
    "trajectory_path",
]

#: Worker processes of the local executor when not given: the machine's cores.
BATCH_MAX_WORKERS = os.cpu_count() or 1
#: The budget fields a batch's ``total_budget`` sums over its runs.
TOTAL_FIELDS = ("max_cost_usd", "max_tokens", "max_model_calls", "max_seconds")


@dataclass(frozen=True)
class Job:
    """One run of a batch (picklable: it goes to a worker)."""

    index: int
    question: str
    context: Any
    #: Where its trajectory goes (None: not written).
    log: Path | None = None


class Executor(Protocol):
    """Runs the jobs of a batch; built as ``cls(max_workers=None, **options)``."""

    #: Its name (``RLM.batch(executor=...)``).
    name: ClassVar[str]
    #: Jobs it runs at once.
    slots: int

    def submit(self, rlm: Runner, job: Job) -> concurrent.futures.Future[Result]:
        """Start ``job`` with ``rlm``; the future's result is its :class:`Result`."""
        ...

    def close(self) -> None:
        """Free the workers (jobs not started are dropped). Safe to call twice."""
        ...


def failed_result(error: str, reason: StopReason = StopReason.ERROR) -> Result:
    """The result of a job that did not run to its end (or did not start)."""
    return Result(answer=None, stop_reason=reason, error=error, usage=Usage())


def run_job(rlm: Runner, job: Job) -> Result:
    """Run one job (in whatever process the executor chose)."""
    try:
        return rlm.with_log(job.log).completion(job.question, job.context)
    except Exception as exc:  # one bad job must not lose the batch
        return failed_result(f"{type(exc).__name__}: {exc}")


class SerialExecutor:
    """One job after another, in this process (tools and callbacks stay here)."""

    name: ClassVar[str] = "serial"

    def __init__(self, max_workers: int | None = None) -> None:
        self.slots = 1

    def submit(self, rlm: Runner, job: Job) -> concurrent.futures.Future[Result]:
        future: concurrent.futures.Future[Result] = concurrent.futures.Future()
        future.set_result(run_job(rlm, job))
        return future

    def close(self) -> None:
        pass


class LocalExecutor:
    """A pool of worker processes on this machine (``spawn``: a clean
    interpreter each, no state forked from a threaded host)."""

    name: ClassVar[str] = "local"

    def __init__(self, max_workers: int | None = None) -> None:
        self.slots = max_workers or BATCH_MAX_WORKERS
        self._pool = concurrent.futures.ProcessPoolExecutor(
            self.slots, mp_context=multiprocessing.get_context("spawn")
        )

    def submit(self, rlm: Runner, job: Job) -> concurrent.futures.Future[Result]:
        return self._pool.submit(run_job, rlm, job)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class BatchResult(Frozen):
    """What :meth:`RLM.batch` returns."""

    results: tuple[Result, ...] = Field(description="One per question, in input order.")
    usage: Tally = Field(description="Every model call of every run.")
    elapsed_s: float = Field(description="Wall time of the whole batch.")
    executor: str
    not_started: int = Field(0, description="Runs never started: the total budget ran out.")

    @property
    def answers(self) -> list[Any]:
        return [r.answer for r in self.results]


def trajectory_path(log_dir: Path, index: int) -> Path:
    """Where run ``index`` of a batch writes its trajectory."""
    return log_dir / f"run-{index:05d}.jsonl"


class _Total:
    """The batch's running total against ``total_budget``."""

    def __init__(self, budget: Budget | None) -> None:
        self.budget = budget
        self.usage = Tally()
        self.started = time.monotonic()

    def spent(self) -> tuple[StopReason, str] | None:
        b = self.budget
        if b is None:
            return None
        u = self.usage
        checks = [
            (b.max_cost_usd, u.cost_usd, StopReason.MAX_COST_USD),
            (b.max_tokens, u.total_tokens, StopReason.MAX_TOKENS),
            (b.max_model_calls, u.requests, StopReason.MAX_MODEL_CALLS),
            (b.max_seconds, time.monotonic() - self.started, StopReason.MAX_SECONDS),
        ]
        for cap, used, reason in checks:
            if cap is not None and used >= cap:
                return reason, f"the batch's total {reason} ({cap}) was spent before this run"
        return None


def check_total_budget(budget: Budget | None) -> None:
    """A batch's total budget may set only the fields it sums."""
    if budget is None:
        return
    fields = budget.model_fields_set - set(TOTAL_FIELDS)
    if fields:
        raise ConfigError(
            f"total_budget sums {', '.join(TOTAL_FIELDS)} over the runs; "
            f"{', '.join(sorted(fields))} is per run (set it in RLM(budget=...))"
        )


def run_batch(
    rlm: Runner,
    jobs: Sequence[Job],
    executor: Executor,
    *,
    total_budget: Budget | None = None,
    on_progress: Callable[[int, int, int, Result], None] | None = None,
) -> BatchResult:
    """Run ``jobs`` on ``executor``, at most its slots at once, each started
    only while the total budget has room; ``on_progress(done, total, index,
    result)`` as each ends."""
    total = _Total(total_budget)
    results: dict[int, Result] = {}
    waiting = list(reversed(jobs))
    running: dict[concurrent.futures.Future[Result], Job] = {}
    not_started = 0
    try:
        while waiting or running:
            while waiting and len(running) < executor.slots:
                job = waiting.pop()
                stop = total.spent()
                if stop is not None:
                    results[job.index] = failed_result(stop[1], stop[0])
                    not_started += 1
                    if on_progress is not None:
                        on_progress(len(results), len(jobs), job.index, results[job.index])
                    continue
                running[executor.submit(rlm, job)] = job
            if not running:
                break
            done, _ = concurrent.futures.wait(running, return_when="FIRST_COMPLETED")
            for future in done:
                job = running.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # the worker itself died
                    result = failed_result(f"the worker failed: {type(exc).__name__}: {exc}")
                results[job.index] = result
                total.usage = total.usage + result.usage.total
                if on_progress is not None:
                    on_progress(len(results), len(jobs), job.index, result)
    finally:
        executor.close()
    return BatchResult(
        results=tuple(results[j.index] for j in jobs),
        usage=total.usage,
        elapsed_s=time.monotonic() - total.started,
        executor=executor.name,
        not_started=not_started,
    )
