"""Canaries planted in the host, and the tally of attacks, for the security suite.

Each module (one per backend) runs attacks from inside its environment, as
hostile model-written code would, and checks the outcome from the host
side: the canaries below (an API key in the host's environment, a secret
held only in the host's memory, a 0600 file, a live loopback listener),
files on the host, processes alive, the host's memory. Every attack is
counted with :func:`attack`; the run ends with a table (backend, attempts,
blocked) through the suite's summary lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from polyrlm.records import ExecResult
from tests.conftest import SUMMARY_LINES

#: Attacks run and blocked, per backend: {backend: [attempts, blocked]}.
TALLY: dict[str, list[int]] = {}


def attack(backend: str, blocked: bool) -> bool:
    """Count one attack on ``backend``; returns ``blocked`` (assert on it)."""
    row = TALLY.setdefault(backend, [0, 0])
    row[0] += 1
    row[1] += int(blocked)
    return blocked


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not TALLY:
        return
    width = max(len(b) for b in TALLY)
    SUMMARY_LINES.append(f"security: {'backend':<{width}}  attempts  blocked")
    for backend, (attempts, blocked) in sorted(TALLY.items()):
        SUMMARY_LINES.append(f"security: {backend:<{width}}  {attempts:>8}  {blocked:>7}")


@dataclass
class Listener:
    """A TCP listener on 127.0.0.1 that keeps whatever reaches it."""

    port: int = 0
    received: list[bytes] = field(default_factory=list)
    connections: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Canaries:
    """What hostile code must never get: each value appears nowhere else."""

    api_key: str
    memory_secret: str
    secret_file: Path
    file_secret: str
    listener: Listener

    def leaked_in(self, text: str) -> list[str]:
        """Which canaries appear in ``text`` (the environment's output, a reply)."""
        found = []
        for name in ("api_key", "memory_secret", "file_secret"):
            if getattr(self, name) in text:
                found.append(name)
        return found


#: Held only in this process's memory (never in the environment or a file).
_MEMORY = {"secret": "mem-canary-" + secrets.token_hex(16)}


@pytest.fixture
def canaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Canaries]:
    key = "sk-canary-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    file_secret = "file-canary-" + secrets.token_hex(16)
    folder = tmp_path / "host-secrets"
    folder.mkdir(mode=0o700)
    secret_file = folder / "secret.txt"
    secret_file.write_text(file_secret)
    secret_file.chmod(0o600)
    listener = Listener()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    listener.port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            listener.connections += 1
            with conn:
                conn.settimeout(0.5)
                with contextlib.suppress(OSError):
                    listener.received.append(conn.recv(65536))

    thread = threading.Thread(target=serve, daemon=True, name="canary-listener")
    thread.start()
    try:
        yield Canaries(key, _MEMORY["secret"], secret_file, file_secret, listener)
    finally:
        stop.set()
        server.close()
        thread.join(2)


class Seen:
    """One environment under attack, and every text that came out of it
    (output, errors, answers), so a canary can be looked for in all of them."""

    def __init__(self, env: Any) -> None:
        self.env, self.seen = env, []

    def run(self, code: str) -> ExecResult:
        result: ExecResult = self.env.execute(code)  # never raises: that is the first check
        self.seen += [result.output, result.error or "", json.dumps(result.answer)]
        return result

    def out(self, code: str) -> str:
        result = self.run(code)
        assert result.error is None and not result.restarted, result.error
        return result.output

    def leaked(self, canaries: Canaries) -> list[str]:
        return [name for text in self.seen for name in canaries.leaked_in(text)]


def needs_bwrap() -> None:
    """The sandboxed backends' attacks run only where the sandbox is real."""
    from polyrlm.sandbox import bwrap_path

    assert bwrap_path() is not None, "these tests need bubblewrap: apt-get install bubblewrap"


def host_processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds ``marker``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def host_alive() -> bool:
    """This process still answers (it was not killed, its fds not exhausted)."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        return False
    return True
