"""The budget ledger: one per recursion tree, shared by every loop in it.

Every request (a retry too) is admitted here right before it is sent, after
it got its concurrency slot. Under a token or cost budget it first *holds*
its worst case (its prompt tokens by litellm's count plus its completion
cap, priced by litellm): the spent figures plus every hold never pass a
limit, so an answer can only overshoot by what a provider reports beyond
what was held (more prompt tokens than litellm counts, or a completion
past the ``max_tokens`` it was sent). A request whose worst case does not
fit waits while other requests hold the room, and is refused once nothing
else does. The clock of ``max_seconds`` starts with :meth:`Ledger.start`.
All methods run on the tree's event loop thread, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass

from polyrlm.errors import BudgetExhausted, SubCallError
from polyrlm.records import Budget, Role, StopReason, Tally, Usage

__all__ = ["Hold", "Ledger"]


@dataclass
class Hold:
    """The room one admitted request keeps until it is settled."""

    tokens: int = 0
    cost_usd: float = 0.0
    settled: bool = False


class Ledger:
    """Counts requests, tokens, cost and time against a :class:`Budget`."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.started = time.monotonic()
        #: Requests admitted (each retry is one): what ``max_model_calls`` counts.
        self.requests = 0
        self.iterations = 0
        self.executions = 0
        self._by_key: dict[tuple[Role, int], Tally] = defaultdict(Tally)
        self._tokens = 0
        self._cost = 0.0
        self._held_tokens = 0
        self._held_cost = 0.0
        self._holds = 0
        self._released: asyncio.Event | None = None
        self.exhausted: BudgetExhausted | None = None

    def start(self) -> None:
        """Start the clock (when the run starts, after the slow imports)."""
        self.started = time.monotonic()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def deadline(self) -> float | None:
        """The ``time.monotonic()`` at which ``max_seconds`` ends, if set."""
        seconds = self.budget.max_seconds
        return None if seconds is None else self.started + seconds

    def seconds_left(self) -> float | None:
        """Seconds until the deadline (0 once past); None without one."""
        deadline = self.deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def out_of_time(self) -> BudgetExhausted:
        """The error of a run that reached its deadline (recorded once)."""
        if self.exhausted is None:
            seconds = self.budget.max_seconds
            self.exhausted = BudgetExhausted(
                StopReason.MAX_SECONDS, f"budget: max_seconds={seconds:g} s of wall-clock time used"
            )
        return self.exhausted

    @property
    def limits_tokens(self) -> bool:
        """Whether requests must hold their worst case (a token or cost budget)."""
        return self.budget.max_tokens is not None or self.budget.max_cost_usd is not None

    def _limit_reached(self) -> BudgetExhausted | None:
        b = self.budget
        if b.max_model_calls is not None and self.requests >= b.max_model_calls:
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
            return self.out_of_time()
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

    # -- admission ----------------------------------------------------------

    def room(self) -> tuple[int | None, float | None]:
        """Tokens and USD not yet spent nor held (None: that budget is unlimited)."""
        b = self.budget
        tokens = None if b.max_tokens is None else b.max_tokens - self._tokens - self._held_tokens
        cost = None if b.max_cost_usd is None else b.max_cost_usd - self._cost - self._held_cost
        return tokens, cost

    @property
    def holding(self) -> bool:
        """Whether any admitted request still holds room."""
        return self._holds > 0

    async def released(self) -> None:
        """Wait until some request gives back the room it held."""
        if self._released is None:
            self._released = asyncio.Event()
        await self._released.wait()

    def admit(self, depth: int, tokens: int = 0, cost_usd: float = 0.0) -> Hold:
        """Admit one request holding ``tokens`` and ``cost_usd`` (its worst
        case), or raise :class:`BudgetExhausted`; the caller checked the room."""
        self.check_depth(depth)
        self.check()
        self.requests += 1
        self._held_tokens += tokens
        self._held_cost += cost_usd
        self._holds += 1
        return Hold(tokens, cost_usd)

    def refuse(self, reason: StopReason, message: str) -> BudgetExhausted:
        """A request that cannot fit even with nothing else in flight: the
        budget is spent as far as this run can use it."""
        if self.exhausted is None:
            self.exhausted = BudgetExhausted(reason, message)
        return self.exhausted

    def release(self, hold: Hold) -> None:
        """Give back the room ``hold`` kept (once); wakes waiting requests."""
        if hold.settled:
            return
        hold.settled = True
        self._held_tokens -= hold.tokens
        self._held_cost -= hold.cost_usd
        self._holds -= 1
        if self._released is not None:
            self._released.set()
            self._released = None

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
        requests: int = 0,
        hold: Hold | None = None,
    ) -> None:
        """Add one finished (or failed) call to the tallies, settling its hold."""
        if hold is not None:
            self.release(hold)
        answered = not failed
        self._by_key[(role, depth)] += Tally(
            calls=int(answered),
            cached_calls=int(cached),
            failed_calls=int(failed),
            requests=requests,
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
