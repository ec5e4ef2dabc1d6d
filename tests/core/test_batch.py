"""RLM.batch: many independent runs, on one executor, results in order."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from polyrlm import RLM, Budget, StopReason
from polyrlm.batch import SerialExecutor
from polyrlm.errors import ConfigError
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.trajectory import read_trajectory


def respond(body: dict[str, Any]) -> str:
    """A scripted root over HTTP (reachable from worker processes): it
    answers with the context's length and the worker's pid."""
    return "```python\nimport os\nFINAL(f'{len(context)} {os.getpid()}')\n```"


@pytest.fixture
def server() -> Any:
    with FakeOpenAIServer(respond) as s:
        yield s


def rlm_for(server: FakeOpenAIServer, **kw: Any) -> RLM:
    return RLM("openai/root", api_base=server.base_url, api_key="x", **kw)


def test_serial_runs_every_question_in_order_and_logs_each(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    seen: list[tuple[int, int, int]] = []
    out = rlm_for(server).batch(
        ["a", "b", "c"],
        ["x", "xx", "xxx"],
        executor="serial",
        log_dir=tmp_path / "runs",
        on_progress=lambda done, total, index, result: seen.append((done, total, index)),
    )
    assert [a.split()[0] for a in out.answers] == ["1", "2", "3"]
    assert {a.split()[1] for a in out.answers} == {str(os.getpid())}
    assert seen == [(1, 3, 0), (2, 3, 1), (3, 3, 2)]
    assert out.usage.calls == 3 and out.executor == "serial" and out.not_started == 0
    logs = sorted((tmp_path / "runs").iterdir())
    assert [p.name for p in logs] == ["run-00000.jsonl", "run-00001.jsonl", "run-00002.jsonl"]
    assert read_trajectory(logs[2])[0].question == "c"  # type: ignore[union-attr]


def test_local_runs_in_worker_processes(server: FakeOpenAIServer) -> None:
    out = rlm_for(server).batch(["q"] * 4, context="abcd", max_workers=2)
    assert [a.split()[0] for a in out.answers] == ["4"] * 4
    pids = {a.split()[1] for a in out.answers}
    assert str(os.getpid()) not in pids and 1 <= len(pids) <= 2
    assert all(r.stop_reason == StopReason.ANSWERED for r in out.results)


def test_the_total_budget_stops_new_runs(server: FakeOpenAIServer) -> None:
    out = rlm_for(server).batch(
        ["q"] * 5, context="c", executor="serial", total_budget=Budget(max_model_calls=2)
    )
    reasons = [r.stop_reason for r in out.results]
    assert reasons == [StopReason.ANSWERED] * 2 + [StopReason.MAX_MODEL_CALLS] * 3
    assert out.not_started == 3 and "total max_model_calls" in (out.results[4].error or "")


def test_one_bad_job_does_not_lose_the_others(server: FakeOpenAIServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = rlm_for(server).batch(["q", "q"], ["ok", empty], executor=SerialExecutor())
    assert out.results[0].stop_reason == StopReason.ANSWERED
    assert out.results[1].stop_reason == StopReason.ERROR and "empty" in (
        out.results[1].error or ""
    )


def test_bad_batches_are_refused(server: FakeOpenAIServer) -> None:
    rlm = rlm_for(server)
    with pytest.raises(ConfigError, match="2 questions but 1 contexts"):
        rlm.batch(["a", "b"], ["x"])
    with pytest.raises(ConfigError, match="not both"):
        rlm.batch(["a"], ["x"], context="y")
    with pytest.raises(ConfigError, match=r"unknown executor 'nope'; executors: local, .*serial"):
        rlm.batch(["a"], executor="nope")
    with pytest.raises(ConfigError, match="max_iterations is per run"):
        rlm.batch(["a"], total_budget=Budget(max_iterations=3))
    with pytest.raises(ConfigError, match="on_event is called in this process only"):
        rlm_for(server, on_event=print).batch(["a"])
