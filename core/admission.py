"""Admitting a request under the budget: its worst case, held before it is sent.

Under a token or cost budget a request's worst case is its prompt (counted
with litellm's token counter for the model) plus its completion cap: the
request's own ``max_tokens`` / ``max_completion_tokens`` if it has one,
else the model's ``max_output_tokens`` from litellm's map, else
:data:`UNKNOWN_MAX_OUTPUT_TOKENS`; its cost is that worst case at litellm's
prices. When the worst case does not fit the room left, the cap is lowered
to what fits and sent as the request's ``max_tokens`` (where the model takes
it), down to :data:`MIN_COMPLETION_TOKENS`; below that the request waits
while others hold room, and is refused once none does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from polyrlm.ledger import Hold, Ledger
from polyrlm.provider import LiteLLM
from polyrlm.records import StopReason

__all__ = ["MIN_COMPLETION_TOKENS", "UNKNOWN_MAX_OUTPUT_TOKENS", "Admission", "Plan"]

#: Completion tokens held for a model litellm's map gives no output limit.
UNKNOWN_MAX_OUTPUT_TOKENS = 4_096
#: Fewest completion tokens a request is sent with when the budget is short
#: (unless it asked for fewer): below this it waits or is refused.
MIN_COMPLETION_TOKENS = 16

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Plan:
    """A request's worst case, worked out once per call (retries reuse it)."""

    prompt_tokens: int
    cap: int
    #: The option that carries the cap (``max_tokens`` or ``max_completion_tokens``).
    key: str
    #: Whether the cap can be sent (litellm passes the option to this model).
    enforced: bool


class Admission:
    """Holds each request's worst case in the ledger before it is sent."""

    def __init__(self, ledger: Ledger, provider: LiteLLM) -> None:
        self.ledger = ledger
        self.provider = provider

    def plan(self, model: str, messages: Messages, options: Mapping[str, Any]) -> Plan | None:
        """The worst case of a request; None when no token or cost budget is set."""
        if not self.ledger.limits_tokens:
            return None
        key = "max_completion_tokens" if "max_completion_tokens" in options else "max_tokens"
        asked = options.get(key)
        known = self.provider.max_output(model) or UNKNOWN_MAX_OUTPUT_TOKENS
        cap = min(int(asked), known) if isinstance(asked, int) and asked > 0 else known
        prompt = self.provider.count(model, messages)
        return Plan(prompt, cap, key, self.provider.caps_output(model))

    def _fits(self, model: str, plan: Plan) -> int:
        """Completion tokens that fit the room left (may be below zero)."""
        tokens, cost = self.ledger.room()
        fit = plan.cap
        if tokens is not None:
            fit = min(fit, tokens - plan.prompt_tokens)
        if cost is not None:
            prompt_cost = self.provider.price(model, plan.prompt_tokens, 0)
            per_token = self.provider.price(model, 0, 1)
            if prompt_cost is not None and per_token:  # unpriced: cost is not bounded
                fit = min(fit, math.floor((cost - prompt_cost) / per_token))
        return fit

    async def admit(
        self, model: str, depth: int, plan: Plan | None, options: dict[str, Any]
    ) -> tuple[Hold, dict[str, Any]]:
        """Admit one request; returns its hold and the options to send."""
        if plan is None:
            return self.ledger.admit(depth), options
        floor = min(plan.cap, MIN_COMPLETION_TOKENS)
        while (fit := self._fits(model, plan)) < floor:
            self.ledger.check_depth(depth)
            self.ledger.check()
            if not self.ledger.holding:
                raise self._refusal(model, plan)
            await self.ledger.released()
        cost = self.provider.price(model, plan.prompt_tokens, fit) or 0.0
        hold = self.ledger.admit(depth, plan.prompt_tokens + fit, cost)
        if fit < plan.cap and plan.enforced:
            options = {**options, plan.key: fit}
        return hold, options

    def _refusal(self, model: str, plan: Plan) -> Exception:
        tokens, _ = self.ledger.room()
        b = self.ledger.budget
        if tokens is not None and tokens - plan.prompt_tokens < MIN_COMPLETION_TOKENS:
            return self.ledger.refuse(
                StopReason.MAX_TOKENS,
                f"budget: a request of {plan.prompt_tokens} prompt tokens to {model} does not "
                f"fit the {max(0, tokens)} of {b.max_tokens} tokens left; it was not sent",
            )
        return self.ledger.refuse(
            StopReason.MAX_COST_USD,
            f"budget: a request to {model} does not fit the ${b.max_cost_usd} cost budget "
            "left; it was not sent",
        )
