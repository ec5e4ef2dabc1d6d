"""Spare environments (polyrlm.spares): the next run's kernel or DuckDB
worker started ahead, handed over once, never shared between runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyrlm import RLM
from polyrlm.backends.python.kernel import KernelPythonEnvironment
from polyrlm.backends.sql.environment import SqlEnvironment
from polyrlm.errors import SubCallError
from polyrlm.spares import SPARES_ENV, SpareSubCalls, close_spares, open_environment
from polyrlm.testing.contract import EchoSubCalls
from polyrlm.testing.scripted import ScriptedModel

_PY = (
    "```python\nimport os\nprint(globals().get('left_behind'))\nleft_behind = 1\n"
    "FINAL(f\"{os.getpid()} {len(context)} {llm_query('ping')}\")\n```"
)
_SQL = "```sql\nSELECT final(count(*) || ' ' || llm('ping')) FROM context;\n```"


@pytest.fixture
def spares_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(SPARES_ENV, "1")
    yield
    close_spares()


def _complete(backend: str, code: str, context: str) -> tuple[str, str]:
    root = ScriptedModel([code])
    sub = ScriptedModel(lambda messages: "pong")
    result = RLM(root.model, sub.model, backend=backend, backend_config={"sandbox": False}
                 if backend == "python" else None).completion("q", context)  # fmt: skip
    outputs = [
        getattr(e, "output", "") for e in result.trajectory if type(e).__name__ == "CodeExecuted"
    ]
    return str(result.answer), "".join(outputs)


def _leftovers() -> set[Path]:
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    return {p for p in tmp.iterdir() if p.name.startswith(("polyrlm-kernel-", "polyrlm-sql-"))}


@pytest.mark.no_replay("the answers carry the kernel's pid, another one on replay")
def test_each_run_gets_a_fresh_kernel_and_the_spare_is_closed(spares_on: None) -> None:
    before = _leftovers()
    runs = [_complete("python", _PY, f"context {i}") for i in range(3)]
    pids = [answer.split()[0] for answer, _ in runs]
    assert len(set(pids)) == 3, pids  # a process of its own each time
    for i, (answer, output) in enumerate(runs):
        assert answer.split()[1:] == [str(len(f"context {i}")), "pong"]
        assert output.startswith("None")  # nothing of an earlier run is there
    assert len(_leftovers() - before) >= 1  # the next run's spare, waiting
    close_spares()
    assert _leftovers() - before == set()


def test_sql_runs_take_spare_workers(spares_on: None) -> None:
    before = _leftovers()
    answers = [_complete("sql", _SQL, "a\nb\n" * (i + 1))[0] for i in range(3)]
    assert answers == ["3 pong", "5 pong", "7 pong"]
    close_spares()
    assert _leftovers() - before == set()


def test_a_spare_refuses_sub_calls_until_a_run_adopts_it() -> None:
    calls = SpareSubCalls(())
    with pytest.raises(SubCallError, match="belongs to no run"):
        calls.llm_query("ping")
    calls.target = EchoSubCalls()
    assert calls.llm_query("ping") == EchoSubCalls().llm_query("ping")


def test_off_by_the_environment_variable_and_for_cheap_kinds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SPARES_ENV, "0")
    env = open_environment(SqlEnvironment, EchoSubCalls(), SqlEnvironment.Config())
    try:
        assert not isinstance(env.subcalls, SpareSubCalls)
    finally:
        env.close()
    assert KernelPythonEnvironment.keeps_spare(KernelPythonEnvironment.Config())
    assert not SqlEnvironment.keeps_spare(SqlEnvironment.Config(worker=False))
