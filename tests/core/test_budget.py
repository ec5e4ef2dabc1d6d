"""Each budget limit stops a run with its own stop reason; a provider that
counts honestly and honours max_tokens never sees a limit passed."""

from __future__ import annotations

from polyrlm import RLM, Budget, StopReason
from polyrlm.records import Role
from polyrlm.testing.scripted import ScriptedModel

BATCH = "```python\nout = llm_batch(['p'] * 50)\nprint(sum(o == 'ok' for o in out))\n```"


def test_max_model_calls_is_exact() -> None:
    root = ScriptedModel([BATCH, "```python\nFINAL(1)\n```"])
    sub = ScriptedModel(lambda m: "ok", latency_s=0.01)
    rlm = RLM(root.model, sub.model, max_concurrency=8, budget=Budget(max_model_calls=6))
    result = rlm.completion("q", "c")
    assert result.stop_reason == StopReason.MAX_MODEL_CALLS
    assert result.usage.total.calls == 6  # reserved before sending: no overshoot at all
    assert result.usage.by_role[Role.SUB].calls == 5
    assert len(sub.calls) == 5


def test_max_tokens_is_never_passed_by_an_honest_provider() -> None:
    # Each request holds its prompt (litellm's count, at least the scripted
    # model's word count) plus its completion cap until it is settled.
    root = ScriptedModel([BATCH, "```python\nFINAL(1)\n```"])
    sub = ScriptedModel(lambda m: " ".join(["w"] * 99), latency_s=0.01)  # 100 tokens per call
    first = RLM(root.model, sub.model, budget=Budget(max_iterations=1, max_model_calls=1))
    root_tokens = first.completion("q", "c").usage.total.total_tokens
    root = ScriptedModel([BATCH, "```python\nFINAL(1)\n```"])
    limit = root_tokens + 5_000
    rlm = RLM(
        root.model,
        sub.model,
        max_concurrency=4,
        budget=Budget(max_tokens=limit),
        sub_model_options={"max_tokens": 100},
    )
    result = rlm.completion("q", "c")
    assert result.stop_reason == StopReason.MAX_TOKENS
    assert "does not fit" in (result.error or "")
    assert result.usage.total.total_tokens <= limit  # no overshoot at all
    assert result.usage.by_role[Role.SUB].calls >= 5  # the room was used, not refused early


def test_max_cost_usd_refuses_a_request_that_cannot_fit() -> None:
    # litellm's mock_response: a real litellm call with a priced model name.
    code = "```python\nprint(llm_query('x'))\n```"
    rlm = RLM("openai/gpt-4o-mini", budget=Budget(max_cost_usd=1e-7), mock_response=code)
    result = rlm.completion("q", "c")
    assert result.stop_reason == StopReason.MAX_COST_USD
    assert "does not fit" in (result.error or "") and "not sent" in (result.error or "")
    assert result.usage.total.requests == 0 and result.usage.total.cost_usd == 0


def test_max_cost_usd_with_a_priced_model_is_not_passed() -> None:
    code = "```python\nprint(llm_query('x'))\n```"
    rlm = RLM("openai/gpt-4o-mini", budget=Budget(max_cost_usd=0.0006), mock_response=code)
    result = rlm.completion("q", "c")
    assert result.stop_reason == StopReason.MAX_COST_USD
    assert 0 < result.usage.total.cost_usd <= 0.0006
    assert result.usage.total.unpriced_calls == 0 and result.usage.total.calls > 2


def test_max_seconds() -> None:
    root = ScriptedModel(["```python\nimport time\ntime.sleep(0.4)\n```"] * 5)
    result = RLM(root.model, budget=Budget(max_seconds=0.3)).completion("q", "c")
    assert result.stop_reason == StopReason.MAX_SECONDS
    assert len(root.calls) == 1


def test_max_iterations_stop_reason_and_partial_answer() -> None:
    root = ScriptedModel(["```python\nanswer['content'] = 'so far'\n```"] * 4)
    result = RLM(root.model, budget=Budget(max_iterations=3)).completion("q", "c")
    assert result.stop_reason == StopReason.MAX_ITERATIONS
    assert result.answer == "so far" and not result.fallback
    assert result.usage.iterations == 4  # three turns and the last-chance one


def test_exhausted_budget_inside_a_child_stops_the_parent() -> None:
    def script(messages: list[dict[str, str]]) -> str:
        if "child" in messages[1]["content"]:
            return "```python\nprint(llm_batch(['a'] * 20))\n```"
        return "```python\nprint(rlm_query('child', context='x'))\n```"

    root = ScriptedModel(script)
    sub = ScriptedModel(lambda m: "ok")
    rlm = RLM(root.model, sub.model, max_depth=2, budget=Budget(max_model_calls=5))
    result = rlm.completion("q", "c")
    assert result.stop_reason == StopReason.MAX_MODEL_CALLS
    assert result.usage.total.calls == 5
