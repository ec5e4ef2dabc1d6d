"""One deadline for the whole tree: ``max_seconds`` ends hung model calls,
running blocks and their pending sub-calls, on time, with a full record."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from polyrlm import RLM, Budget, StopReason
from polyrlm.config import DEADLINE_GRACE_S
from polyrlm.events import ModelCalled, RunFinished
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.testing.scripted import ScriptedModel

HOSTED = "openai/gpt-4o-mini"
BACKENDS = ["python-inline", "python"]


@pytest.fixture
def hung() -> Iterator[FakeOpenAIServer]:
    """A provider that takes a minute to answer anything."""
    with FakeOpenAIServer(latency_s=60.0) as server:
        yield server


def _ends_cleanly(result: Any) -> None:
    last = result.trajectory[-1]
    assert isinstance(last, RunFinished) and last.stop_reason == result.stop_reason


def test_a_hung_root_call_ends_at_the_deadline(hung: FakeOpenAIServer) -> None:
    rlm = RLM(HOSTED, api_base=hung.base_url, api_key="k", budget=Budget(max_seconds=1.5))
    started = time.monotonic()
    result = rlm.completion("q", "c")
    elapsed = time.monotonic() - started
    assert result.stop_reason == StopReason.MAX_SECONDS
    assert elapsed < 1.5 + DEADLINE_GRACE_S
    assert "max_seconds" in (result.error or "")
    failed = [e for e in result.trajectory if isinstance(e, ModelCalled)]
    assert len(failed) == 1 and "max_seconds" in (failed[0].error or "")
    _ends_cleanly(result)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hung_batch_ends_at_the_deadline(hung: FakeOpenAIServer, backend: str) -> None:
    root = ScriptedModel(["```python\nout = llm_batch(['a'] * 200)\nprint(len(out))\n```"])
    rlm = RLM(
        root.model,
        HOSTED,
        backend=backend,
        max_concurrency=8,
        budget=Budget(max_seconds=2.0),
        sub_model_options={"api_base": hung.base_url, "api_key": "k"},
    )
    started = time.monotonic()
    result = rlm.completion("q", "c")
    assert result.stop_reason == StopReason.MAX_SECONDS
    assert time.monotonic() - started < 2.0 + DEADLINE_GRACE_S
    subs = [e for e in result.trajectory if isinstance(e, ModelCalled) and e.role == "sub"]
    assert subs and all(e.error for e in subs)  # every call sent is in the record, failed
    assert result.usage.total.requests <= 1 + 8  # only the slots' worth went out
    _ends_cleanly(result)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sleeping_block_ends_at_the_deadline(backend: str) -> None:
    root = ScriptedModel(["```python\nimport time\ntime.sleep(25)\n```"] * 3)
    started = time.monotonic()
    result = RLM(root.model, backend=backend, budget=Budget(max_seconds=2.0)).completion("q", "c")
    assert result.stop_reason == StopReason.MAX_SECONDS
    assert time.monotonic() - started < 2.0 + DEADLINE_GRACE_S
    _ends_cleanly(result)


def test_the_clock_starts_with_the_run() -> None:
    root = ScriptedModel(["```python\nFINAL('x')\n```"])
    result = RLM(root.model, budget=Budget(max_seconds=30)).completion("q", "c")
    assert result.stop_reason == StopReason.ANSWERED
    assert result.usage.elapsed_s < 10  # litellm's import is not counted


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_timed_out_block_frees_the_slots_of_its_sub_calls(
    hung: FakeOpenAIServer, backend: str
) -> None:
    # The block times out mid-batch; its sub-calls are cancelled, so the next
    # root call (through the same broker, 4 slots) goes out at once.
    root = ScriptedModel(
        ["```python\nout = llm_batch(['a'] * 50)\n```", "```python\nFINAL('done')\n```"]
    )
    rlm = RLM(
        root.model,
        HOSTED,
        backend=backend,
        max_concurrency=4,
        backend_config={"exec_timeout_s": 1.0, "exec_grace_s": 2.0},
        sub_model_options={"api_base": hung.base_url, "api_key": "k"},
    )
    started = time.monotonic()
    result = rlm.completion("q", "c")
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "done"
    assert time.monotonic() - started < 1.0 + 2.0 + 3.0
    assert result.usage.by_role["sub"].requests <= 4


def test_a_request_timeout_option_is_a_per_call_timeout(hung: FakeOpenAIServer) -> None:
    rlm = RLM(
        HOSTED,
        api_base=hung.base_url,
        api_key="k",
        timeout=0.5,
        retry_attempts=2,
        retry_initial_wait_s=0.01,
    )
    started = time.monotonic()
    result = rlm.completion("q", "c")
    assert result.stop_reason == StopReason.ERROR
    assert time.monotonic() - started < 10
    assert result.usage.total.requests == 2 and result.usage.total.failed_calls == 1
    assert "Timeout" in (result.error or "") or "no reply" in (result.error or "")
    _ends_cleanly(result)


def test_call_timeout_s_on_rlm(hung: FakeOpenAIServer) -> None:
    rlm = RLM(HOSTED, api_base=hung.base_url, api_key="k", call_timeout_s=0.5, retry_attempts=1)
    started = time.monotonic()
    result = rlm.completion("q", "c")
    assert result.stop_reason == StopReason.ERROR and time.monotonic() - started < 6
