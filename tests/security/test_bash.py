"""Hostile model-written shell code in the ``bash`` sandbox.

Every attack runs inside the shell, as the model's own block would, and is
judged from the host: no canary in any output, error or answer, the host's
files unread and its disk unfilled, the listener untouched, the host alive,
no process of the environment left after close, the other environment's
files unreached, and a normal block (or run) working right after. The shell
writes its answer file itself, so a malformed one must become the model's
error, never an exception out of ``execute()``.

These tests need bubblewrap (``apt-get install bubblewrap``); CI installs it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyrlm import RLM, StopReason
from polyrlm.backends.bash.environment import BashEnvironment
from polyrlm.backends.bash.reports import BASH_ANSWER_MAX_BYTES
from polyrlm.events import CodeExecuted
from polyrlm.testing.contract import EchoSubCalls
from polyrlm.testing.scripted import ScriptedModel
from tests.security.conftest import (
    Canaries,
    Seen,
    attack,
    host_alive,
    host_processes_with,
    needs_bwrap,
)

BACKEND = "bash"
MIB = 1024**2
#: Small caps, so that the bombs end quickly.
FAST: dict[str, Any] = {
    "sandbox": True,
    "exec_timeout_s": 5.0,
    "interrupt_grace_s": 1.0,
    "memory_limit_bytes": 512 * MIB,
    "process_limit": 64,
    "disk_limit_bytes": 64 * MIB,
}


@pytest.fixture(autouse=True)
def _needs_bwrap() -> None:
    needs_bwrap()


class Shell(Seen):
    """One sandboxed shell, and every text that came out of it."""

    def works(self) -> bool:
        """A normal block right after: the context, a sub-call, a file."""
        result = self.run('wc -c < "$CONTEXT"; llm --no-input ping; echo x > ok.txt && cat ok.txt')
        return result.error is None and result.output.endswith("re:ping\nx\n")


def _open(**config: Any) -> BashEnvironment:
    env = BashEnvironment(EchoSubCalls(), BashEnvironment.Config(**{**FAST, **config}))
    env.load_context("the context " + secrets.token_hex(8))
    return env


@pytest.fixture
def shell(canaries: Canaries) -> Iterator[Shell]:
    """A shell opened after the canaries are planted."""
    with _open() as env:
        yield Shell(env)


def test_host_secrets_files_and_network_are_out_of_reach(shell: Shell, canaries: Canaries) -> None:
    code = (
        "env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n'; "
        f"cat {canaries.secret_file} 2>&1; ls /proc; "
        f"exec 3<>/dev/tcp/127.0.0.1/{canaries.listener.port} && echo CONNECTED; "
        f"curl -sS -m 1 {canaries.listener.url} && echo CONNECTED; true"
    )
    result = shell.run(code)
    assert attack(BACKEND, "OPENAI_API_KEY" not in result.output)
    assert attack(BACKEND, "CONNECTED" not in result.output)
    pids = [w for w in result.output.split() if w.isdigit() and int(w) < 100]
    assert attack(BACKEND, len(pids) < 10)
    time.sleep(0.3)
    assert attack(BACKEND, canaries.listener.connections == 0)
    assert attack(BACKEND, shell.leaked(canaries) == [])
    assert shell.works() and host_alive()


def test_it_runs_unprivileged_without_root_files_or_home_folders(shell: Shell) -> None:
    result = shell.run(
        'id -u; id -g; cat /etc/shadow /etc/gshadow 2>&1; ls /root /home 2>&1; grep -h "^exec" '
        '"$(command -v llm)"; readlink -f /proc/self/exe; true'
    )
    lines = result.output.splitlines()
    assert attack(BACKEND, lines[:2] == ["1000", "1000"]), lines
    shadow = Path("/etc/shadow").read_text().splitlines()[0]  # root's line, as the host reads it
    assert attack(BACKEND, shadow not in result.output and "Permission denied" in result.output)
    assert attack(BACKEND, result.output.count("No such file or directory") >= 2)
    shown = [line for line in lines if not line.startswith("ls: cannot access")]
    assert attack(BACKEND, not [line for line in shown if "/root" in line or "/home" in line])
    assert shell.works()


def test_a_fork_bomb_is_stopped(shell: Shell) -> None:
    started = time.monotonic()
    result = shell.run(":(){ :|:& };:")
    if not result.restarted:  # the block ended first; the bomb went on in the background
        time.sleep(0.5)
        result = shell.run("echo next")
    assert attack(BACKEND, result.restarted and "SandboxLimit" in (result.error or ""))
    assert "more than 64 processes" in (result.error or "")
    assert time.monotonic() - started < 10 and host_alive()
    assert shell.works()


def test_memory_is_capped(shell: Shell) -> None:
    result = shell.run("python3 -c 'x = bytearray(2 * 1024**3)' 2>&1 | tail -1")
    assert attack(BACKEND, "MemoryError" in result.output and not result.restarted)
    assert shell.works()


def test_private_disk_is_capped(shell: Shell) -> None:
    free = shutil.disk_usage(shell.env.dirs.root).free
    # 3 GiB to /tmp: a tmpfs of 64 MiB, in memory, never the host's disk.
    result = shell.run("head -c 3G /dev/zero > /tmp/big")
    assert attack(BACKEND, "SIGXFSZ" in (result.error or ""))
    result = shell.run("rm /tmp/big; for f in a b c; do head -c 40M /dev/zero > /tmp/$f; done")
    assert attack(BACKEND, "No space left on device" in (result.error or ""))
    # One file past the cap in the (host-backed) working directory.
    result = shell.run("head -c 3G /dev/zero > big")
    assert attack(
        BACKEND,
        result.error is not None and (shell.env.dirs.work / "big").stat().st_size <= 64 * MIB,
    )
    # Many files under the cap each: the host's watch stops it and empties the folder.
    result = shell.run(
        "for i in $(seq 100); do head -c 60M /dev/zero > f$i || break; done; sleep 5"
    )
    assert attack(BACKEND, result.restarted and "writable folders" in (result.error or ""))
    assert attack(BACKEND, not list(shell.env.dirs.work.iterdir()))
    assert free - shutil.disk_usage(shell.env.dirs.root).free < 256 * MIB
    assert shell.works()


def test_kill_every_process_of_the_sandbox(shell: Shell) -> None:
    for code in ("kill -9 -1", "/bin/kill -9 -1", "(kill -9 -1)", "kill -9 $$", "kill -9 1"):
        result = shell.run(code)
        assert attack(BACKEND, host_alive())
        if result.restarted:
            assert "every process of the sandbox was killed" in (result.error or ""), code
        assert shell.works(), code


def test_every_process_dies_with_the_environment(canaries: Canaries) -> None:
    marker = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    env = _open()
    Shell(env).run(
        f"setsid sleep {marker} & nohup sleep {marker}1 >/dev/null 2>&1 & "
        f"( ( sleep {marker}2 & ) & ) ; true"
    )
    time.sleep(0.3)
    assert len(host_processes_with(marker)) == 3  # they are there, seen from the host
    env.close()
    assert attack(BACKEND, host_processes_with(marker) == [])


def test_another_environment_is_out_of_reach(canaries: Canaries) -> None:
    with _open() as env_a, _open() as env_b:
        b = Shell(env_b)
        secret = "b-secret-" + secrets.token_hex(8)
        b.run(f"echo {secret} > mine.txt")
        a = Shell(env_a)
        result = a.run(
            f"cat {env_b.dirs.work}/mine.txt {env_b.dirs.root}/*/* 2>&1; ls /tmp 2>&1; "
            "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep TOKEN; true"
        )
        assert attack(BACKEND, secret not in result.output)
        assert attack(BACKEND, env_b.bridge is not None and env_b.bridge.token not in result.output)
        assert a.works() and b.works()


#: Answer files the model's code may leave.
ANSWERS = {
    "huge": f"head -c {BASH_ANSWER_MAX_BYTES + 1} /dev/zero | tr '\\0' x > /rlm/answer/answer",
    "a symlink to a host file": "ln -sf /etc/passwd /rlm/answer/answer",
    "a FIFO": "mkfifo /rlm/answer/answer",
    "a folder": "mkdir /rlm/answer/answer",
}


@pytest.mark.parametrize("kind", list(ANSWERS), ids=list(ANSWERS))
def test_a_malformed_answer_file_is_the_models_error(kind: str) -> None:
    root = ScriptedModel(
        [f"```bash\n{ANSWERS[kind]}\n```", "```bash\nrm -rf /rlm/answer/answer; final 7\n```"]
    )
    rlm = RLM(root.model, backend="bash", backend_config={"sandbox": True})
    result = rlm.completion("q", "ctx")
    first = next(e for e in result.trajectory if isinstance(e, CodeExecuted))
    assert attack(BACKEND, "AnswerError" in (first.error or "")), first.error
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "7"
    assert os.getpid() and host_alive()


def test_output_floods_are_capped_on_the_host(shell: Shell) -> None:
    before = _rss_bytes()
    result = shell.run("head -c 300M /dev/zero | tr '\\0' x; head -c 300M /dev/zero >&2; false")
    assert attack(BACKEND, len(result.output) <= shell.env.config.capture_limit_chars)
    assert attack(BACKEND, len(result.error or "") < 3_000)  # the status and the end of stderr
    assert attack(BACKEND, _rss_bytes() - before < 64 * MIB)
    assert shell.works()


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
