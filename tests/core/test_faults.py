"""Provider faults, as a user's provider serves them, through litellm's real
OpenAI code against the fake server: every fault becomes a typed error or a
retry, never a crash; each run ends on time with a stop reason, a clear
error and a whole trajectory. On python-inline and the Jupyter kernel."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from polyrlm import RLM, Budget, StopReason
from polyrlm.config import DEADLINE_GRACE_S
from polyrlm.events import ModelCalled, RunFinished, RunStarted
from polyrlm.testing.fake_faults import Fault
from polyrlm.testing.fake_server import FakeOpenAIServer

HOSTED = "openai/gpt-4o-mini"
BACKENDS = ["python-inline", "python"]
SUB_CALL = "```python\nr = llm_query('ping')\nprint('sub said', r)\n```"
FINAL = "```python\nFINAL('done')\n```"


def _script(view: dict[str, Any]) -> str:
    """The root (it has a system prompt): a sub-call, then the answer; a sub-call: pong."""
    messages = view["messages"]
    if messages[0]["role"] != "system":
        return "pong"
    turns = sum(m["role"] == "assistant" for m in messages)
    return SUB_CALL if turns == 0 else FINAL


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(_script) as s:
        yield s


def _rlm(server: FakeOpenAIServer, backend: str, **kw: Any) -> RLM:
    kw.setdefault("retry_initial_wait_s", 0.05)
    return RLM(HOSTED, backend=backend, api_base=server.base_url, api_key="k", **kw)


def _valid(result: Any) -> None:
    """A whole record: it starts and ends the root run, every call is reported."""
    assert isinstance(result.trajectory[0], RunStarted)
    last = result.trajectory[-1]
    assert isinstance(last, RunFinished) and last.stop_reason == result.stop_reason
    calls = [e for e in result.trajectory if isinstance(e, ModelCalled)]
    assert sum(e.requests for e in calls) == result.usage.total.requests


TRANSIENT = [
    Fault("status", 500),
    Fault("status", 502),
    Fault("status", 503),
    Fault("status", 529),
    Fault("close"),
    Fault("malformed"),
    Fault("html", 502),
    Fault("stall_stream"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fault", TRANSIENT, ids=lambda f: f.spec())
def test_a_transient_fault_is_retried(server: FakeOpenAIServer, backend: str, fault: Fault) -> None:
    server.faults = [fault, fault]  # the root's first request, then the sub-call's
    result = _rlm(server, backend, call_timeout_s=1.0).completion("q", "c")
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "done"
    assert result.usage.total.requests == result.usage.total.calls + 2  # one retry each
    code = [e for e in result.trajectory if getattr(e, "event", "") == "code_executed"]
    assert "sub said pong" in code[0].output
    _valid(result)


@pytest.mark.parametrize("backend", BACKENDS)
def test_retry_after_is_honoured(server: FakeOpenAIServer, backend: str) -> None:
    server.faults = [Fault("status", 429, retry_after_s=2)]
    started = time.monotonic()
    result = _rlm(server, backend).completion("q", "c")
    assert result.stop_reason == StopReason.ANSWERED
    first, second = server.calls[:2]
    assert time.monotonic() - started >= 2.0  # not the 0.05 s backoff
    assert first.fault == "status" and second.fault is None
    _valid(result)


def test_retry_after_past_the_deadline_fails_at_once(server: FakeOpenAIServer) -> None:
    server.faults = [Fault("status", 429, retry_after_s=60)]
    started = time.monotonic()
    result = _rlm(server, "python-inline", budget=Budget(max_seconds=5)).completion("q", "c")
    assert time.monotonic() - started < 3
    assert result.stop_reason == StopReason.ERROR
    assert "RateLimitError" in (result.error or "") and "deadline" in (result.error or "")
    _valid(result)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wrong_key_is_not_retried_and_names_the_variable(
    server: FakeOpenAIServer, backend: str
) -> None:
    server.faults = [Fault("status", 401)] * 5
    started = time.monotonic()
    result = _rlm(server, backend).completion("q", "c")
    assert time.monotonic() - started < 5
    assert result.stop_reason == StopReason.ERROR
    assert "AuthenticationError" in (result.error or "") and "OPENAI_API_KEY" in result.error
    assert result.usage.total.requests == 1
    _valid(result)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_choices_is_a_typed_error(server: FakeOpenAIServer, backend: str) -> None:
    server.faults = [Fault("empty_choices")] * 10
    result = _rlm(server, backend, stop_at_code_end=False).completion("q", "c")
    assert result.stop_reason == StopReason.ERROR
    assert "no choices" in (result.error or "")
    _valid(result)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_sub_call_is_the_codes_error(server: FakeOpenAIServer, backend: str) -> None:
    def picker(view: dict[str, Any]) -> Fault | None:
        return None if view["messages"][0]["role"] == "system" else Fault("status", 500)

    server.fault_for = picker
    result = _rlm(server, backend, retry_attempts=2).completion("q", "c")
    assert result.stop_reason == StopReason.ANSWERED  # the root went on after it
    executed = [e for e in result.trajectory if getattr(e, "event", "") == "code_executed"]
    assert "InternalServerError" in (executed[0].error or "")
    _valid(result)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hang_ends_at_the_deadline(server: FakeOpenAIServer, backend: str) -> None:
    server.faults = [Fault("hang")] * 10
    started = time.monotonic()
    result = _rlm(server, backend, budget=Budget(max_seconds=2)).completion("q", "c")
    assert time.monotonic() - started < 2 + DEADLINE_GRACE_S
    assert result.stop_reason == StopReason.MAX_SECONDS and "max_seconds" in (result.error or "")
    _valid(result)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_usage_is_counted_by_polyrlm(server: FakeOpenAIServer, backend: str) -> None:
    # A provider that omits usage: tokens are counted with litellm's counter,
    # and the priced model's cost follows, so budgets still trip.
    server.fault_for = lambda view: Fault("no_usage")
    result = _rlm(server, backend).completion("q", "c")
    assert result.stop_reason == StopReason.ANSWERED
    total = result.usage.total
    assert total.prompt_tokens > 0 and total.completion_tokens > 0 and total.cost_usd > 0
    limited = _rlm(server, backend, budget=Budget(max_tokens=total.total_tokens // 2))
    assert limited.completion("q", "c").stop_reason == StopReason.MAX_TOKENS


#: 3,000 tokens by either count; each turn's block differs (a block that
#: repeats the last one is not run again).
BIG_TURN = "```python\nprint('x ' * 3000, {n})\n```"


def _growing() -> Any:
    """A root whose history outgrows a small window: four big outputs, then the
    answer (counted by replies served: compaction drops old turns from view)."""
    served = iter(range(10**6))
    return lambda view: BIG_TURN.format(n=n) if (n := next(served)) < 4 else FINAL


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("known", [True, False], ids=["window-known", "window-unknown"])
def test_a_history_that_outgrows_the_window_is_compacted(backend: str, known: bool) -> None:
    window = 6_000
    model = HOSTED if known else "openai/a-model-litellm-does-not-know"
    with FakeOpenAIServer(_growing(), window_tokens=window) as server:
        rlm = RLM(
            model,
            backend=backend,
            api_base=server.base_url,
            api_key="k",
            windows={model: window} if known else None,
            budget=Budget(max_output_chars=20_000),
        )
        result = rlm.completion("q", "c")
        refused = sum(c.status == 400 for c in server.calls)
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "done"
    assert refused == (0 if known else 1)  # known: compacted before it was refused
    last_prompt = [e for e in result.trajectory if isinstance(e, ModelCalled)][-1].prompt
    assert "shortened to fit" in last_prompt  # the model is told
    _valid(result)
