"""The budget ledger: one per recursion tree, shared by every loop in it.

Every model call is reserved here right before it is sent (after it got its
concurrency slot), so a limit is overshot by at most the calls in flight.
All methods run on the tree's event loop thread, so no lock is needed.
"""

from __future__ import annotations

import time
from collections import defaultdict

from polyrlm.errors import BudgetExhausted, SubCallError
from polyrlm.records import Budget, Role, StopReason, Tally, Usage

__all__ = ["Ledger"]


class Ledger:
    """Counts calls, tokens, cost and time against a :class:`Budget`."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.started = time.monotonic()
        self.reserved_calls = 0
        self.iterations = 0
        self.executions = 0
        self._by_key: dict[tuple[Role, int], Tally] = defaultdict(Tally)
        self._tokens = 0
        self._cost = 0.0
        self.exhausted: BudgetExhausted | None = None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def _limit_reached(self) -> BudgetExhausted | None:
        b = self.budget
        if b.max_model_calls is not None and self.reserved_calls >= b.max_model_calls:
            return BudgetExhausted(
                StopReason.MAX_MODEL_CALLS, f"budget: {b.max_model_calls} model calls used"
            )
        if b.max_tokens is not None and self._tokens >= b.max_tokens:
            return BudgetExhausted(
                StopReason.MAX_TOKENS, f"budget: {self._tokens} of {b.max_tokens} tokens used"
            )
        if b.max_cost_usd is not None and self._cost >= b.max_cost_usd:
            return BudgetExhausted(
                StopReason.MAX_COST_USD, f"budget: ${self._cost:.4f} of ${b.max_cost_usd} spent"
            )
        if b.max_seconds is not None and self.elapsed_s >= b.max_seconds:
            return BudgetExhausted(
                StopReason.MAX_SECONDS, f"budget: {b.max_seconds} s of wall-clock time used"
            )
        return None

    def check(self) -> None:
        """Raise :class:`BudgetExhausted` once any limit is reached."""
        if self.exhausted is None:
            self.exhausted = self._limit_reached()
        if self.exhausted is not None:
            raise self.exhausted

    def check_depth(self, depth: int) -> None:
        """Refuse a call deeper than ``max_depth`` (the code's mistake, not fatal)."""
        if depth > self.budget.max_depth:
            raise SubCallError(
                f"sub-calls at depth {depth} exceed max_depth={self.budget.max_depth}"
                + ("; sub-calls are disabled" if self.budget.max_depth == 0 else "")
            )

    def reserve_call(self, depth: int) -> None:
        """Reserve one model call, or raise :class:`BudgetExhausted`."""
        self.check_depth(depth)
        self.check()
        self.reserved_calls += 1

    def record(
        self,
        role: Role,
        depth: int,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cost_usd: float | None = 0.0,
        cached: bool = False,
        failed: bool = False,
        cached_prompt_tokens: int = 0,
    ) -> None:
        """Add one finished (or failed) call to the tallies."""
        answered = not failed
        self._by_key[(role, depth)] += Tally(
            calls=int(answered),
            cached_calls=int(cached),
            failed_calls=int(failed),
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=cached_prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd or 0.0,
            unpriced_calls=int(answered and not cached and cost_usd is None),
        )
        self._tokens += prompt_tokens + completion_tokens
        self._cost += cost_usd or 0.0

    def usage(self) -> Usage:
        by_role: dict[Role, Tally] = defaultdict(Tally)
        by_depth: dict[int, Tally] = defaultdict(Tally)
        total = Tally()
        for (role, depth), tally in self._by_key.items():
            by_role[role] += tally
            by_depth[depth] += tally
            total += tally
        return Usage(
            total=total,
            by_role=dict(by_role),
            by_depth=dict(sorted(by_depth.items())),
            iterations=self.iterations,
            executions=self.executions,
            elapsed_s=round(self.elapsed_s, 6),
        )
