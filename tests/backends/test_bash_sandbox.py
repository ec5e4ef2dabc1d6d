"""The bash backend's sandbox (bubblewrap): no network, a read-only system
and context, only its own folders writable, no host secret in sight.

These tests need bubblewrap (Debian: ``apt-get install bubblewrap``); CI
installs it.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyrlm.backends.bash.environment import BashEnvironment
from polyrlm.errors import BackendUnavailable
from polyrlm.sandbox import bwrap_path
from polyrlm.testing.contract import EchoSubCalls

SECRET = "sk-polyrlm-fake-secret-7f3a"


@pytest.fixture(autouse=True)
def _needs_bwrap() -> None:
    assert bwrap_path() is not None, "these tests need bubblewrap: apt-get install bubblewrap"


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on the host's loopback that accepts connections."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def _env(context: object = "", **config: object) -> BashEnvironment:
    env = BashEnvironment(EchoSubCalls(), BashEnvironment.Config(**config))  # type: ignore[arg-type]
    env.load_context(context)
    return env


def test_sandbox_is_the_default_with_bwrap() -> None:
    with _env() as env:
        assert BashEnvironment.sandboxed is True and env.sandboxed is True
        assert "runs in a sandbox (bubblewrap)" in env.prompt_guide()
    with _env(sandbox=False) as env:
        assert env.sandboxed is False and "NOT sandboxed" in env.prompt_guide()


def test_no_tcp_connection(listener: int) -> None:
    tries = (
        f"exec 3<>/dev/tcp/127.0.0.1/{listener} && echo CONNECTED",
        f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {listener}), 2)\""
        " && echo CONNECTED",
        f"curl -sS -m 2 http://127.0.0.1:{listener}/ && echo CONNECTED",
        "exec 3<>/dev/tcp/1.1.1.1/80 && echo CONNECTED",
    )
    with _env() as env:
        for code in tries:
            result = env.execute(code)
            assert "CONNECTED" not in result.output and result.error is not None, code
    with _env(sandbox=False) as env:  # the same command reaches the listener without it
        assert env.execute(tries[0]).output == "CONNECTED\n"


def test_only_its_own_folders_are_writable() -> None:
    host_tmp = Path(tempfile.gettempdir())
    with _env("the context") as env:
        current = Path("/proc/sys/vm/stat_interval").read_text().strip()
        for target in (
            "/etc/polyrlm-test",
            "/usr/polyrlm-test",
            "/polyrlm-test",
            "/rlm/polyrlm-test",
            "$CONTEXT_DIR/polyrlm-test",
            "/rlm/bin/llm",
            "/dev/shm/polyrlm-test",
            "/proc/sys/vm/stat_interval",  # the host's own value, if it ever got through
        ):
            value = current if target.startswith("/proc") else "x"
            result = env.execute(f"echo {value} > {target} && echo WROTE")
            assert "WROTE" not in result.output and result.error is not None, target
        wrote = env.execute("echo x > here.txt && echo x > /tmp/t.txt && ls /tmp")
        assert wrote.error is None and wrote.output == "t.txt\n"
        assert (env.dirs.work / "here.txt").exists() and not (host_tmp / "t.txt").exists()


def test_the_context_is_read_only(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("original\n")
    for context in ("text", data, ["a", "b"]):
        with _env(context) as env:
            for code in (
                'echo x >> "$CONTEXT"',
                'rm -rf "$CONTEXT"',
                'mv "$CONTEXT_DIR" elsewhere',
                'touch "$CONTEXT_DIR/new"',
            ):
                assert env.execute(code).error is not None, (context, code)
            assert env.execute('cat "$CONTEXT_DIR"/* | head -c 8').output in (
                "text",
                "original",
                "ab",
            )
    assert data.read_text() == "original\n"


def test_host_secrets_files_and_processes_are_out_of_sight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLYRLM_FAKE_SECRET", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    marker = Path(tempfile.gettempdir()) / f"polyrlm-test-marker-{os.getpid()}"
    marker.write_text(SECRET)
    try:
        with _env() as env:
            out = env.execute(
                "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; "
                f"cat {marker} /root/.bash_history 2>&1; ls /home /root /run 2>&1; ls /proc"
            ).output
    finally:
        marker.unlink()
    assert SECRET not in out and "OPENAI_API_KEY" not in out
    assert "POLYRLM_BRIDGE_TOKEN" in out  # its own bridge token: that it may see
    pids = [word for word in out.split() if word.isdigit()]
    assert len(pids) < 10  # its own processes only, not the host's


def test_sub_calls_cross_the_sandbox() -> None:
    with _env() as env:
        result = env.execute("llm --no-input ping; printf '\"a\"\\n' | llm_batch")
        assert result.error is None and result.output == 're:ping\n"re:a"\n'


def test_a_broken_bwrap_is_reported_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: Creating new namespace failed: nope' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr("polyrlm.sandbox.bwrap_path", lambda: str(fake))
    env = BashEnvironment(EchoSubCalls())
    try:
        with pytest.raises(
            BackendUnavailable, match=r"Creating new namespace failed.*sandbox=False"
        ):
            env.load_context("x")
    finally:
        env.close()


def test_the_answer_folder_cannot_reach_host_files() -> None:
    secret = Path(tempfile.gettempdir()) / f"polyrlm-test-answer-{os.getpid()}"
    secret.write_text(SECRET)
    try:
        with _env() as env:
            linked = env.execute(f"ln -sf {secret} /rlm/answer/answer")  # a host path
            assert "the answer file is a symlink" in (linked.error or "")
            assert not linked.answer_ready and SECRET not in str(env.read_state().answer)
            fifo = env.execute("rm /rlm/answer/answer; mkfifo /rlm/answer/answer")
            assert "is a FIFO" in (fifo.error or "") and not fifo.answer_ready  # no block
            assert env.execute("final 42").answer == "42"  # `final` replaces what was there
    finally:
        secret.unlink()
