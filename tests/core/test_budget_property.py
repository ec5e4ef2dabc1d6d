"""The budget bound, property-tested: across random concurrency, depth,
provider faults (rate limits, 5xx: every retry is admitted again) and
budgets, a run spends at most its limit when the provider counts honestly
(no more prompt tokens than litellm's counter, ``max_tokens`` honoured),
and at most the excess the provider reported beyond what was held when it
over-reports. The worst overshoot found per budget is printed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyrlm import RLM, Budget, StopReason
from polyrlm.events import ModelCalled
from polyrlm.testing.fake_faults import Fault
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.testing.scripted import ScriptedModel
from tests.conftest import SUMMARY_LINES

SUB = "openai/gpt-4o-mini"  # priced in litellm's map: cost budgets apply
#: The worst overshoot seen per budget (spent minus limit; <= 0 is none).
WORST: dict[str, float] = {}
#: Runs per budget, and those that the budget stopped.
RUNS: dict[str, list[int]] = {}
EXAMPLES = 12


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as s:
        yield s
    for name, worst in sorted(WORST.items()):
        verdict = "none" if worst <= 0 else f"{worst:.6g}"
        runs, stopped = RUNS[name]
        SUMMARY_LINES.append(
            f"budget property: worst overshoot of {name}: {verdict} "
            f"({runs} runs, {stopped} stopped by the budget)"
        )


def _root(n: int, words: int, depth: int) -> ScriptedModel:
    batch = f"out = llm_batch(['{'w ' * words}'] * {n})\nprint(len(out))"
    children = f"out = rlm_batch(['go'] * {max(1, n // 8)})\nprint(len(out))"

    def script(messages: list[dict[str, Any]]) -> str:
        turns = sum(m["role"] == "assistant" for m in messages)
        child = "go" in messages[1]["content"] and "q?" not in messages[1]["content"]
        code = batch if child or depth == 1 else children
        return f"```python\n{code if turns == 0 else 'FINAL(1)'}\n```"

    return ScriptedModel(script)


def _run(server: FakeOpenAIServer, draw: dict[str, Any], budget: Budget) -> Any:
    server.faults = [Fault("status", 429 if i % 2 else 500) for i in range(draw["faults"])]
    server.extra_usage_tokens = draw["lie"]
    server.responder = lambda view: "a " * draw["reply_words"]
    root = _root(draw["n"], draw["words"], draw["depth"])
    rlm = RLM(
        root.model,
        SUB,
        max_depth=draw["depth"],
        max_concurrency=draw["concurrency"],
        budget=budget,
        retry_initial_wait_s=0.001,
        sub_model_options={"api_base": server.base_url, "api_key": "k", "max_tokens": 64},
    )
    return rlm.completion("q?", "c")


def _excess(result: Any, draw: dict[str, Any]) -> int:
    """Tokens the provider reported beyond what it produced (its lie), in total."""
    calls = [e for e in result.trajectory if isinstance(e, ModelCalled) and e.role == "sub"]
    return draw["lie"] * sum(1 for e in calls if e.error is None)


DRAWS = st.fixed_dictionaries(
    {
        "concurrency": st.integers(1, 64),
        "depth": st.integers(1, 2),
        "faults": st.integers(0, 6),
        "lie": st.sampled_from([0, 0, 0, 5]),
        "n": st.integers(1, 60),
        "words": st.integers(1, 40),
        "reply_words": st.integers(1, 100),
    }
)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _note(name: str, overshoot: float, result: Any) -> None:
    WORST[name] = max(WORST.get(name, float("-inf")), overshoot)
    counts = RUNS.setdefault(name, [0, 0])
    counts[0] += 1
    counts[1] += result.stop_reason != StopReason.ANSWERED


@pytest.mark.no_replay("hundreds of generated runs; replay is covered elsewhere")
@SETTINGS
@given(draw=DRAWS, limit=st.integers(200, 20_000))
def test_max_tokens_holds(server: FakeOpenAIServer, draw: dict[str, Any], limit: int) -> None:
    result = _run(server, draw, Budget(max_tokens=limit))
    spent = result.usage.total.total_tokens
    name = "max_tokens (honest)" if not draw["lie"] else "max_tokens (lying provider)"
    _note(name, spent - limit, result)
    assert spent <= limit + _excess(result, draw)
    assert result.stop_reason in (StopReason.ANSWERED, StopReason.MAX_TOKENS)


@pytest.mark.no_replay("hundreds of generated runs; replay is covered elsewhere")
@SETTINGS
@given(draw=DRAWS, limit=st.floats(1e-6, 1e-3))
def test_max_cost_usd_holds(server: FakeOpenAIServer, draw: dict[str, Any], limit: float) -> None:
    result = _run(server, draw, Budget(max_cost_usd=limit))
    spent = result.usage.total.cost_usd
    name = "max_cost_usd (honest)" if not draw["lie"] else "max_cost_usd (lying provider)"
    _note(name, spent - limit, result)
    excess_usd = _excess(result, draw) * 6e-7  # gpt-4o-mini's price per output token
    assert spent <= limit + excess_usd + 1e-12
    assert result.stop_reason in (StopReason.ANSWERED, StopReason.MAX_COST_USD)


@pytest.mark.no_replay("hundreds of generated runs; replay is covered elsewhere")
@SETTINGS
@given(draw=DRAWS, limit=st.integers(1, 80))
def test_max_model_calls_holds(server: FakeOpenAIServer, draw: dict[str, Any], limit: int) -> None:
    result = _run(server, draw, Budget(max_model_calls=limit))
    requests = result.usage.total.requests
    _note("max_model_calls (requests)", requests - limit, result)
    assert requests <= limit  # retries included: never one more
    assert result.stop_reason in (StopReason.ANSWERED, StopReason.MAX_MODEL_CALLS)
