"""Ctrl-C (SIGINT) and SIGTERM end ``polyrlm run`` cleanly on every backend,
mid-``llm_batch`` with the provider hanging: exit 130, no traceback, no child
process left, and a trajectory that ends with ``run_finished``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyrlm.plugins.bench.load_probe import descendants
from polyrlm.registry import get_registry
from polyrlm.testing.fake_faults import Fault
from polyrlm.testing.fake_server import FakeOpenAIServer

BACKENDS = ["python-inline", "python", "sql", "bash", "wasm"]
#: Seconds the run may take to end after the signal (environments close in 2 s).
END_WITHIN_S = 6.0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    def picker(view: dict[str, Any]) -> Fault | None:  # sub-calls hang; the root answers
        return None if view["messages"][0]["role"] == "system" else Fault("hang")

    with FakeOpenAIServer(fault_for=picker) as s:
        yield s


def _start(server: FakeOpenAIServer, backend: str, tmp_path: Path) -> tuple[Any, Path]:
    env_class = get_registry().get(backend)
    block = f"```{env_class.fence_tags[0]}\n{env_class.contract.llm_batch}\n```"
    server.responder = lambda view: block
    log = tmp_path / "run.jsonl"
    context = tmp_path / "context.txt"
    context.write_text("some context\n")
    command = [sys.executable, "-m", "polyrlm.cli", "run", "what?", "-b", backend]
    command += ["-m", "openai/gpt-4o-mini", "--api-base", server.base_url, "--api-key", "k"]
    command += ["--log", str(log), "-c", str(context)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    return proc, log


def _wait_for_batch(proc: Any, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if log.exists() and '"batch_started"' in log.read_text():
            time.sleep(0.5)  # the sub-calls are out, hanging
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no llm_batch started within 90 s")


@pytest.mark.no_replay("the run is a separate process; its record is checked here")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_signal_mid_batch_ends_the_run_cleanly(
    server: FakeOpenAIServer, backend: str, sig: signal.Signals, tmp_path: Path
) -> None:
    proc, log = _start(server, backend, tmp_path)
    try:
        _wait_for_batch(proc, log)
        children = descendants(proc.pid)
        sent = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=END_WITHIN_S + 10)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert took < END_WITHIN_S, f"took {took:.1f} s"
    assert "Traceback" not in stderr and "stop: interrupted" in stderr, stderr
    lines = log.read_text().splitlines()
    last = json.loads(lines[-1])
    assert last["event"] == "run_finished" and last["stop_reason"] == "interrupted"
    assert [json.loads(line)["event"] for line in lines].count("run_finished") == 1
    time.sleep(0.2)  # a killed child is reaped by init
    assert not [pid for pid in children if _alive(pid)], "child processes outlived the run"
