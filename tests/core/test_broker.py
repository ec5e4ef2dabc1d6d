"""The broker: order, per-item errors, concurrency, retries, cost, guard, cache."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from polyrlm.broker import Broker
from polyrlm.cache import ResponseCache
from polyrlm.environment import SubCallFailure
from polyrlm.errors import ModelCallFailed, PromptTooLong, SubCallError
from polyrlm.events import Event, ModelCalled
from polyrlm.ledger import Ledger
from polyrlm.records import Budget, Role
from polyrlm.testing.scripted import ScriptedModel


def make_broker(**kw: Any) -> tuple[Broker, list[Event]]:
    events: list[Event] = []
    kw.setdefault("retry_initial_wait_s", 0.001)
    return Broker(Ledger(Budget()), events.append, **kw), events


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def ask(broker: Broker, model: str, content: str = "q", **options: Any) -> str:
    """One sub-call through the broker, run to completion."""
    text: str = run(
        broker.call(
            [{"role": "user", "content": content}],
            model=model,
            role=Role.SUB,
            depth=1,
            run_id="r",
            options=options or None,
        )
    )
    return text


def test_batch_keeps_order_and_isolates_errors() -> None:
    def reply(messages: list[dict[str, str]]) -> str:
        prompt = messages[-1]["content"]
        if prompt == "bad":
            raise ValueError("cannot answer this one")
        return prompt.upper()

    model = ScriptedModel(reply)
    broker, events = make_broker()
    out = run(broker.batch(["a", "bad", "c"], model=model.model, depth=1, run_id="r"))
    assert out[0] == "A" and out[2] == "C"
    assert isinstance(out[1], SubCallFailure) and "cannot answer this one" in out[1].error
    assert out[1].startswith("[sub-call failed:")
    usage = broker.ledger.usage()
    assert usage.total.calls == 2 and usage.total.failed_calls == 1
    assert sum(isinstance(e, ModelCalled) and e.error is not None for e in events) == 1


def test_concurrency_limit_holds() -> None:
    in_flight = 0
    peak = 0

    class Counting(ScriptedModel):
        async def respond(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> Any:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await super().respond(messages, options)
            finally:
                in_flight -= 1

    model = Counting(lambda m: "x", latency_s=0.01)
    broker, _ = make_broker(max_concurrency=5)
    out = run(broker.batch([str(i) for i in range(40)], model=model.model, depth=1, run_id="r"))
    assert out == ["x"] * 40
    assert peak == 5


def test_retries_on_rate_limit_then_succeeds() -> None:
    model = ScriptedModel(["fine"], fail_first=2)
    broker, _ = make_broker(retry_attempts=3)
    text = ask(broker, model.model)
    assert text == "fine" and len(model.calls) == 3
    assert broker.ledger.usage().total.calls == 1  # one logical call, reserved once


def test_retries_give_up_with_a_clear_error() -> None:
    model = ScriptedModel(["never"], fail_first=5)
    broker, _ = make_broker(retry_attempts=2)
    with pytest.raises(ModelCallFailed, match="RateLimitError"):
        ask(broker, model.model)
    assert len(model.calls) == 2
    assert broker.ledger.usage().total.failed_calls == 1


def test_non_retryable_error_fails_at_once() -> None:
    def reply(messages: list[dict[str, str]]) -> str:
        raise ValueError("bad request")

    model = ScriptedModel(reply)
    broker, _ = make_broker(retry_attempts=4)
    with pytest.raises(ModelCallFailed):
        ask(broker, model.model)
    assert len(model.calls) == 1


def test_unmapped_model_costs_none_mapped_model_has_a_price() -> None:
    model = ScriptedModel(["a"])
    broker, events = make_broker()
    ask(broker, model.model)
    ask(broker, "openai/gpt-4o-mini", mock_response="hi")
    costs = [e.cost_usd for e in events if isinstance(e, ModelCalled)]
    assert costs[0] is None and costs[1] is not None and costs[1] > 0
    total = broker.ledger.usage().total
    assert total.unpriced_calls == 1 and total.cost_usd == costs[1]


def test_prompt_guard_refuses_before_sending() -> None:
    model = ScriptedModel(["never sent"])
    broker, _ = make_broker(windows={model.model: 1_000})
    with pytest.raises(PromptTooLong, match="window"):
        ask(broker, model.model, "word " * 5_000)
    assert model.calls == []
    out = run(broker.batch(["word " * 5_000, "short"], model=model.model, depth=1, run_id="r"))
    assert isinstance(out[0], SubCallFailure) and "window" in out[0]
    assert out[1] == "never sent"


def test_an_empty_sub_call_prompt_is_refused_unsent() -> None:
    model = ScriptedModel(["sent"])
    broker, events = make_broker()
    for blank in ("", " \n\t"):
        with pytest.raises(SubCallError, match="the prompt is empty"):
            ask(broker, model.model, blank)
    out = run(broker.batch(["", "short"], model=model.model, depth=1, run_id="r"))
    assert isinstance(out[0], SubCallFailure) and "the prompt is empty" in out[0]
    assert out[1] == "sent" and len(model.calls) == 1
    assert sum(isinstance(e, ModelCalled) for e in events) == 1


def test_prompt_guard_uses_litellm_window() -> None:
    broker, _ = make_broker()
    assert broker.window("openai/gpt-4o-mini") == 128_000
    assert broker.window("openai/no-such-model-here") is None
    with pytest.raises(PromptTooLong):
        ask(broker, "openai/gpt-4o-mini", "hello " * 200_000, mock_response="x")


def test_response_cache_serves_repeats_from_disk(tmp_path: Path) -> None:
    model = ScriptedModel(["first", "second"])
    for expected_calls in (1, 1):
        cache = ResponseCache(tmp_path / "c")
        broker, events = make_broker(cache=cache)
        text = ask(broker, model.model)
        cache.close()
        assert text == "first" and len(model.calls) == expected_calls
    last = [e for e in events if isinstance(e, ModelCalled)][-1]
    assert last.cached and broker.ledger.usage().total.cached_calls == 1
