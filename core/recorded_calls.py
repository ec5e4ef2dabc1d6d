"""Model calls served from a record (a replay) instead of a provider.

The ledger admits and counts each as the original was counted, so budget
stops happen at the same step, and a recorded failure fails again as it
did (a prompt refused as too long, a call the deadline ended).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from polyrlm.admission import Admission, Plan
from polyrlm.errors import ModelCallFailed, PromptTooLong
from polyrlm.events import ModelCalled
from polyrlm.ledger import Ledger
from polyrlm.provider import Reply
from polyrlm.records import Role

__all__ = ["DEADLINE_ERROR", "TOO_LONG_ERROR", "RecordedCalls", "serve_recorded"]

#: In a recorded call's error: the provider refused the prompt as too long.
TOO_LONG_ERROR = "ContextWindowExceededError"
#: In a recorded call's error: the run's deadline ended it in flight.
DEADLINE_ERROR = "the run's max_seconds ended while this call was in flight"


class RecordedCalls(Protocol):
    """A recorded source of model calls (a trajectory's, for a replay:
    :class:`polyrlm.replay_book.ReplayBook`), served instead of a provider."""

    def peek(self, *, role: Role, run_id: str, digest: str) -> ModelCalled | None:
        """The call :meth:`serve` would return now, if any; nothing is used up."""

    def serve(self, *, role: Role, run_id: str, digest: str, prompt: str) -> ModelCalled:
        """The recorded call answering this request; raises
        :class:`~polyrlm.errors.ModelCallFailed` when there is none."""


async def serve_recorded(
    book: RecordedCalls,
    ledger: Ledger,
    admission: Admission,
    plan: Plan | None,
    model: str,
    role: Role,
    depth: int,
    run_id: str,
    digest: str,
    prompt: str,
    report: Callable[..., None],
) -> Reply:
    """A call served from the record: the ledger admits and counts it as
    the original was, so budget stops happen at the same step."""
    ahead = book.peek(role=role, run_id=run_id, digest=digest)
    hold = None
    if ahead is not None and ahead.cached:
        ledger.check_depth(depth)
    else:  # refused here (depth, budget) as the original was: before it was sent
        hold, _ = await admission.admit(model, depth, plan, {})
        ledger.requests += max(0, (ahead.requests if ahead else 1) - 1)  # its retries
    requests = 0 if hold is None else (ahead.requests if ahead else 1)
    try:
        recorded = book.serve(role=role, run_id=run_id, digest=digest, prompt=prompt)
    except ModelCallFailed as exc:  # nothing recorded for it: say so in this record
        ledger.record(role, depth, failed=True, hold=hold)
        report(None, error=str(exc), requests=0)
        raise
    if recorded.cached:
        ledger.record(role, depth, cost_usd=0.0, cached=True, hold=hold)
    else:
        if recorded.error is not None:
            ledger.record(role, depth, failed=True, requests=requests, hold=hold)
            report(None, error=recorded.error, requests=requests)
            if TOO_LONG_ERROR in recorded.error:
                raise PromptTooLong(recorded.error)
            if DEADLINE_ERROR in recorded.error:
                raise ledger.out_of_time()
            raise ModelCallFailed(recorded.error)
        pt, ct = recorded.prompt_tokens, recorded.completion_tokens
        ledger.record(
            role,
            depth,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=recorded.cost_usd,
            cached_prompt_tokens=recorded.cached_prompt_tokens,
            requests=requests,
            hold=hold,
        )
    text = recorded.response or ""
    report(
        text,
        recorded.prompt_tokens,
        recorded.completion_tokens,
        cost_usd=recorded.cost_usd,
        cached=recorded.cached,
        tool_calls=recorded.tool_calls,
        cached_prompt_tokens=recorded.cached_prompt_tokens,
        requests=requests,
    )
    return Reply(
        text,
        recorded.prompt_tokens,
        recorded.completion_tokens,
        recorded.cached_prompt_tokens,
        recorded.cost_usd,
        tool_calls=tuple(recorded.tool_calls or ()),
    )
