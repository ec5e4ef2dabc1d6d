"""The ray executor: batches of runs as tasks on a real local Ray instance.

One instance for the module, started by a ``RayExecutor`` that owns it (and
shuts it down at the end, leaving no process and no folder behind); the tests'
batches use ``executor="ray"`` through the registry and find it initialised,
so they use it and leave it running. The root is scripted over HTTP by a
``FakeOpenAIServer`` in this process, so the Ray workers reach it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from polyrlm import RLM, Budget, StopReason
from polyrlm.errors import BackendUnavailable, ConfigError
from polyrlm.events import RunFinished, RunStarted
from polyrlm.plugins.ray.executor import RayExecutor
from polyrlm.records import Role
from polyrlm.registry import get_registry
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.trajectory import read_trajectory

#: Ray CPUs (and so jobs at once) of the module's instance: this machine's two cores.
RAY_CPUS = 2
#: Seconds Ray's processes may take to exit after ``ray.shutdown()``.
SHUTDOWN_WAIT_S = 10.0
#: Seconds the joining driver (another process) may take.
JOIN_TIMEOUT_S = 120.0
#: Questions per batch in the main test.
QUESTIONS = 20

SUB_PREFIX = "Repeat the number: "
#: The root's code per backend: find the needle, have a sub-call repeat it, answer.
ROOT_CODE = {
    "python": (
        "```python\nimport os, re\n"
        "found = re.search(r'magic number is (\\d+)', context).group(1)\n"
        f"FINAL(llm_query('{SUB_PREFIX}' + found) + ' ' + str(os.getpid()))\n```"
    ),
    "sql": (
        f"```sql\nSELECT final(llm('{SUB_PREFIX}' || "
        "regexp_extract(text, 'magic number is ([0-9]+)', 1)))\n"
        "FROM context WHERE text LIKE '%magic number is%';\n```"
    ),
    "crash": "```python\nimport os\nos._exit(3)\n```",
}


def respond(body: dict[str, Any]) -> str:
    """Sub-calls repeat the number; the root (named by its model) writes code."""
    last = body["messages"][-1]["content"]
    if isinstance(last, str) and last.startswith(SUB_PREFIX):
        return last.removeprefix(SUB_PREFIX)
    if "crash" in str(body["messages"][1]["content"]):
        return ROOT_CODE["crash"]
    return ROOT_CODE[body["model"]]


def needle(i: int) -> tuple[str, str]:
    """Context ``i``: filler with one line holding its magic number, and the number."""
    number = str(1000 + 37 * i)
    lines = [f"line {n}: nothing to see" for n in range(40 + i)]
    lines.insert(7 + i, f"The magic number is {number}.")
    return "\n".join(lines), number


def _tracker(proc: Path) -> bool:
    """multiprocessing's resource tracker (the local executor's pool starts it):
    it lives as long as this interpreter, by design."""
    try:
        return b"multiprocessing.resource_tracker" in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def descendants() -> dict[int, str]:
    """Live processes below this one (Ray's workers are the raylet's children),
    but for the resource tracker."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
        if rest[0] != "Z" and not _tracker(stat.parent):
            parents[int(stat.parent.name)], names[int(stat.parent.name)] = int(rest[1]), name
    out, frontier = {}, {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        out.update({pid: names[pid] for pid in frontier})
    return out


@pytest.fixture(scope="module")
def owner() -> Iterator[RayExecutor]:
    """A local Ray instance for the module, started (and stopped) by an executor."""
    assert not ray.is_initialized()
    before = descendants()
    executor = RayExecutor(max_workers=RAY_CPUS)
    started = {name for pid, name in descendants().items() if pid not in before}
    folder = executor.temp_dir
    assert folder is not None
    try:
        assert executor.owns_instance and executor.slots == RAY_CPUS
        assert ray.cluster_resources()["CPU"] == RAY_CPUS
        assert {"gcs_server", "raylet"} <= started, started
        assert folder.is_dir() and folder.parent == Path(tempfile.gettempdir())
        yield executor
    finally:
        executor.close()
    assert not ray.is_initialized()
    deadline = time.monotonic() + SHUTDOWN_WAIT_S
    while (left := set(descendants()) - set(before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"Ray left processes running: {descendants()}"
    assert not folder.exists()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(respond) as s:
        yield s


def rlm_for(server: FakeOpenAIServer, language: str, backend: str, **kw: Any) -> RLM:
    return RLM(f"openai/{language}", api_base=server.base_url, api_key="x", backend=backend, **kw)


@pytest.mark.parametrize(
    ("language", "backend", "logs"), [("python", "python-inline", None), ("sql", "sql", "worker")]
)
def test_a_batch_of_twenty_runs_in_ray_workers(
    owner: RayExecutor,
    server: FakeOpenAIServer,
    tmp_path: Path,
    language: str,
    backend: str,
    logs: str | None,
) -> None:
    contexts, expected = zip(*(needle(i) for i in range(QUESTIONS)), strict=True)
    questions = [f"What is the magic number of text {i}?" for i in range(QUESTIONS)]
    seen: list[tuple[int, int, int]] = []
    options = {} if logs is None else {"logs": logs}
    out = rlm_for(server, language, backend).batch(
        questions,
        list(contexts),
        executor="ray",
        log_dir=tmp_path / "runs",
        on_progress=lambda done, total, index, result: seen.append((done, total, index)),
        **options,
    )
    assert out.executor == "ray" and out.not_started == 0
    assert ray.is_initialized()  # not this batch's instance: left running
    answers = [str(a).split()[0] for a in out.answers]
    assert answers == list(expected)
    if language == "python":  # the code ran in Ray's worker processes, not here
        pids = {int(str(a).split()[1]) for a in out.answers}
        assert os.getpid() not in pids and 1 <= len(pids) <= RAY_CPUS
    for result in out.results:  # each run's sub-call went through its own broker
        assert result.stop_reason == StopReason.ANSWERED
        assert result.usage.by_role[Role.ROOT].calls == 1
        assert result.usage.by_role[Role.SUB].calls == 1
    assert out.usage.calls == 2 * QUESTIONS
    assert [s[0] for s in seen] == list(range(1, QUESTIONS + 1))
    assert {s[1] for s in seen} == {QUESTIONS} and {s[2] for s in seen} == set(range(QUESTIONS))
    logs_made = sorted((tmp_path / "runs").iterdir())
    assert [p.name for p in logs_made] == [f"run-{i:05d}.jsonl" for i in range(QUESTIONS)]
    for i, path in enumerate(logs_made):
        events = read_trajectory(path)
        assert isinstance(events[0], RunStarted) and events[0].question == questions[i]
        assert isinstance(events[-1], RunFinished) and events[-1].answer == out.answers[i]


def test_the_total_budget_stops_new_runs(owner: RayExecutor, server: FakeOpenAIServer) -> None:
    cap, n = 5, 10
    out = rlm_for(server, "python", "python-inline").batch(
        ["q"] * n, context=needle(0)[0], executor="ray", total_budget=Budget(max_model_calls=cap)
    )
    answered = [r for r in out.results if r.stop_reason == StopReason.ANSWERED]
    skipped = [r for r in out.results if r.stop_reason == StopReason.MAX_MODEL_CALLS]
    assert len(answered) + len(skipped) == n and out.not_started == len(skipped)
    # Runs start while fewer than `cap` calls are spent (2 per run): at least
    # 3 end; at most 2 had ended when the last ones started, one per slot.
    assert 3 <= len(answered) <= 2 + RAY_CPUS
    assert out.usage.requests == 2 * len(answered)
    assert all("total max_model_calls" in (r.error or "") for r in skipped)


def test_one_failing_run_does_not_lose_the_others(
    owner: RayExecutor, server: FakeOpenAIServer, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    text, number = needle(3)
    out = rlm_for(server, "python", "python-inline").batch(
        ["find it", "find it", "crash the worker", "find it"],
        [text, empty, text, text],
        executor="ray",
    )
    reasons = [r.stop_reason for r in out.results]
    assert reasons == [StopReason.ANSWERED, StopReason.ERROR, StopReason.ERROR, StopReason.ANSWERED]
    assert "empty" in (out.results[1].error or "")
    assert "the worker failed: WorkerCrashedError" in (out.results[2].error or "")
    assert [str(out.answers[i]).split()[0] for i in (0, 3)] == [number, number]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_settings_and_addresses_are_refused(owner: RayExecutor) -> None:
    with pytest.raises(ConfigError, match="bad Ray address 'nowhere'"):
        RayExecutor(address="nowhere")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"no Ray cluster reachable at '127\.0\.0\.1:\d+'"):
        RayExecutor(address=f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 5.0
    with pytest.raises(ConfigError, match="already initialised in this process"):
        RayExecutor(num_cpus=1)
    with pytest.raises(ConfigError, match="logs must be one of worker, driver"):
        RayExecutor(logs="nfs")
    with pytest.raises(ConfigError, match="max_workers must be at least 1"):
        RayExecutor(max_workers=0)


def test_the_plugin_registers_it_and_says_what_to_install(
    owner: RayExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = get_registry().executors()["ray"]
    assert (spec.plugin, spec.requires, spec.extra) == ("ray", ("ray",), "ray")
    assert get_registry().executor("ray") is RayExecutor
    joined = RayExecutor()  # the running instance: its CPUs, and it stays up
    assert not joined.owns_instance and joined.slots == RAY_CPUS and joined.logs == "driver"
    joined.close()
    assert ray.is_initialized()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(BackendUnavailable, match=re.escape('pip install "polyrlm[ray]"')):
        RayExecutor()


def test_the_batch_benchmark_times_every_executor(
    owner: RayExecutor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from polyrlm.cli import main

    out = tmp_path / "batch.json"
    argv = ["bench", "batch", "--n", "4", "--latency", "0.05", "--workers", "2"]
    argv += ["--executors", "serial,ray", "--context-chars", "2000", "--out", str(out)]
    assert main(argv) == 0  # the local pool has its own tests (tests/core/test_batch.py)
    data = json.loads(out.read_text())
    columns = data["results"]["python-inline"]
    assert [c["executor"] for c in columns] == ["serial", "ray", "ray warm"]
    assert all(c["wrong"] == 0 and c["model_calls"] == 4 and c["wall_s"] > 0 for c in columns)
    assert data["ray_started_here"] is False and ray.is_initialized()  # the module's instance
    table = capsys.readouterr().out
    assert "4 needle runs" in table and "ray warm" in table and "4/4" in table
    assert main(["bench", "batch", "--executors", "serial,dask"]) == 2
    assert "--executors takes serial, local, ray; not dask" in capsys.readouterr().err


#: A second driver (another process) joining the module's instance by address.
JOIN_SCRIPT = """
import sys
import ray
from polyrlm import RLM
rlm = RLM("openai/sql", api_base=sys.argv[2], api_key="x", backend="sql")
out = rlm.batch(["q", "q"], [sys.argv[3], sys.argv[3]], executor="ray", address=sys.argv[1])
print(out.answers, out.executor, ray.is_initialized())
"""


def test_a_cluster_is_joined_by_address_and_left_running(
    owner: RayExecutor, server: FakeOpenAIServer
) -> None:
    address = ray.get_runtime_context().gcs_address
    text, number = needle(5)
    done = subprocess.run(
        [sys.executable, "-c", JOIN_SCRIPT, address, server.base_url, text],
        capture_output=True,
        text=True,
        timeout=JOIN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == f"['{number}', '{number}'] ray False"
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == RAY_CPUS


def test_wasm_sandboxes_still_open_in_a_process_that_started_ray(owner: RayExecutor) -> None:
    """Ray's C++ core would replace this process's SIGSEGV handler (its
    crash reporter) and ray.init turns faulthandler on: wasmtime then refuses
    every later sandbox here. The executor keeps both as they were."""
    from polyrlm.backends.wasm.environment import WasmEnvironment
    from polyrlm.testing.contract import EchoSubCalls

    assert owner.owns_instance
    with WasmEnvironment(EchoSubCalls()) as env:
        env.load_context("text")
        result = env.execute("print(len(context))")
    assert result.error is None and result.output.strip() == "4"
