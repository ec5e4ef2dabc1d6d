"""Floods of the host bridge, from the host and from inside the bash sandbox.

Hostile code holds its environment's token, so the bridge's limits must hold
for authenticated clients too. The attacks are the functions below (standard
library only): the host tests call them in-process or in a child process,
and the sandbox test ships their source into the bash sandbox and runs them
there, as a model's block would. Every attack is judged from the host: its
resident memory (VmRSS) and open files, sampled while the attack runs; that
it still opens files; and a legitimate sub-call through the same bridge,
served right after. No attack makes the test itself allocate much: floods
send one shared piece again and again, stop when the host closes, and stop
anyway at a bound (about what a regressed host would then hold).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from polyrlm import RLM, StopReason, bridge_client
from polyrlm.bridge import (
    BRIDGE_AUTH_TIMEOUT_S,
    BRIDGE_MAX_CONNECTIONS,
    BRIDGE_MAX_HELD_BYTES,
    BRIDGE_MAX_REQUEST_BYTES,
    Bridge,
)
from polyrlm.events import CodeExecuted
from polyrlm.testing.contract import EchoSubCalls
from polyrlm.testing.scripted import ScriptedModel
from tests.security.conftest import attack, host_alive

BACKEND = "bridge"
MIB = 1024**2
#: What a flood sends at a time (the same bytes again and again).
PIECE = b"A" * MIB
#: Resident memory 16 huge lines without a token may cost the host.
NO_TOKEN_RSS_BYTES = 64 * MIB
#: Open files the host may gain beyond the bridge's cap (its own pipes, samplers, ...).
FD_SLACK = 48
#: Connections an idle flood holds open.
HELD = 2_000
#: A request cut off inside its prompt: what an oversize flood sends first.
OPEN_REQUEST = b'{"id": 1, "method": "llm_query", "params": {"prompt": "'
#: A request that must never be served (it follows a wrong token).
SNEAKY = b'{"id": 1, "method": "llm_query", "params": {"prompt": "sneaky"}}\n'
#: The refusal of an oversize request.
TOO_LONG = f"at most {BRIDGE_MAX_REQUEST_BYTES:,} bytes"


# -- the attacks: standard library only, shipped as source to other processes --


def connect() -> socket.socket:
    """A connection to this environment's bridge (``$POLYRLM_BRIDGE``)."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(os.environ["POLYRLM_BRIDGE"])  # blocking: a full backlog makes it wait
    sock.settimeout(10)
    return sock


def token_line() -> bytes:
    """What a client sends first: this environment's token."""
    return os.environ["POLYRLM_BRIDGE_TOKEN"].encode() + b"\n"


def flood(first: bytes, bound: int) -> tuple[int, str]:
    """Sends ``first``, then pieces with no newline until the host closes (or
    ``bound`` bytes went); returns the bytes of pieces sent and the host's reply."""
    sent, reply = 0, b""
    with connect() as sock:
        with contextlib.suppress(OSError):
            sock.sendall(first)
            while sent < bound:
                sock.sendall(PIECE)
                sent += len(PIECE)
        with contextlib.suppress(OSError):
            while piece := sock.recv(65536):
                reply += piece
    return sent, reply.decode(errors="replace")


def floods(count: int, first: bytes, bound: int) -> list[tuple[int, str]]:
    """``count`` floods at once."""
    results: list[tuple[int, str]] = []
    threads = [
        threading.Thread(target=lambda: results.append(flood(first, bound))) for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def hold(count: int) -> list[socket.socket]:
    """``count`` connections that send nothing, held open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 100
    if soft < want:  # RLIM_INFINITY is -1
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard < 0 else min(want, hard), hard))
    return [connect() for _ in range(count)]


def still_open(held: list[socket.socket]) -> int:
    """How many of ``held`` the host has not closed (it may have said why first)."""
    count = 0
    for sock in held:
        sock.setblocking(False)
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            count += 1
        except OSError:
            pass
        sock.close()
    return count


def slowloris() -> tuple[float, int]:
    """The right token, a byte per 100 ms: (seconds until closed, bytes sent)."""
    started, sent = time.monotonic(), 0
    with connect() as sock, contextlib.suppress(OSError):
        sock.setblocking(False)  # a byte always fits; a read must not wait
        for byte in token_line():
            sock.send(bytes([byte]))
            sent += 1
            time.sleep(0.1)
            with contextlib.suppress(BlockingIOError):
                sock.recv(65536)  # a refusal line, or the end
                break
    return time.monotonic() - started, sent


ATTACKS = (connect, token_line, flood, floods, hold, still_open, slowloris)


def script(main: str) -> str:
    """Python source for another process: the attacks above, then ``main``."""
    imports = "import contextlib, json, os, resource, socket, subprocess, sys, threading, time"
    parts = [
        "from __future__ import annotations",
        imports,
        f"PIECE = b'A' * {MIB}",
        *map(inspect.getsource, ATTACKS),
    ]
    return "\n\n".join([*parts, textwrap.dedent(main)])


# -- the host's side --


@dataclass
class Peaks:
    """The host's memory (bytes) and open files: before, and at worst during."""

    rss_before: int
    fds_before: int
    rss_peak: int = 0
    fds_peak: int = 0

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_before

    @property
    def fds_growth(self) -> int:
        return self.fds_peak - self.fds_before


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def watch() -> Iterator[Peaks]:
    """Samples the host's memory and open files every 10 ms meanwhile."""
    peaks = Peaks(rss(), fds())
    peaks.rss_peak, peaks.fds_peak = peaks.rss_before, peaks.fds_before
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peaks.rss_peak = max(peaks.rss_peak, rss())
            peaks.fds_peak = max(peaks.fds_peak, fds())

    sampler = threading.Thread(target=sample, daemon=True, name="bridge-flood-watch")
    sampler.start()
    try:
        yield peaks
    finally:
        stop.set()
        sampler.join()


@pytest.fixture
def bridge(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bridge]:
    b = Bridge(EchoSubCalls())
    for key, value in b.env.items():
        monkeypatch.setenv(key, value)
    yield b
    b.close()


def served() -> bool:
    """The host opens files, and serves a legitimate call through the bridge."""
    return host_alive() and bridge_client.llm_query("legit") == "re:legit"


def test_huge_lines_without_a_token_are_dropped_at_once(bridge: Bridge) -> None:
    with watch() as peaks:  # a host that buffered them would hold 16 x 32 MiB
        results = floods(16, b"", 32 * MIB)
    dropped = all(sent <= 4 * MIB and "Unauthorized" in reply for sent, reply in results)
    assert attack(BACKEND, dropped and peaks.rss_growth < NO_TOKEN_RSS_BYTES and served())
    assert len(results) == 16


def test_held_idle_and_slow_connections_are_dropped(bridge: Bridge) -> None:
    holder_main = """
        held = hold(int(sys.argv[1]))
        print(len(held), flush=True)
        sys.stdin.read()
        print(still_open(held), flush=True)
    """
    slow: list[tuple[float, int]] = []
    loris = threading.Thread(target=lambda: slow.append(slowloris()))
    with watch() as peaks:
        loris.start()
        time.sleep(0.05)  # it takes a place among the held connections
        with subprocess.Popen(
            [sys.executable, "-I", "-c", script(holder_main), str(HELD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as holder:
            assert holder.stdout is not None and holder.stdin is not None
            assert int(holder.stdout.readline()) == HELD, "could not open the connections"
            at_most_cap = bridge.connections <= BRIDGE_MAX_CONNECTIONS
            started = time.monotonic()
            legit = served()  # waits (Busy, retried) until the idle ones are dropped
            waited = time.monotonic() - started
            loris.join()
            holder.stdin.close()
            left_open = int(holder.stdout.readline())
    within_fds = peaks.fds_growth <= BRIDGE_MAX_CONNECTIONS + FD_SLACK
    assert attack(BACKEND, at_most_cap and within_fds and left_open == 0 and legit), peaks
    assert waited < BRIDGE_AUTH_TIMEOUT_S + 2
    seconds, sent = slow[0]
    dropped = seconds < BRIDGE_AUTH_TIMEOUT_S + 1.5 and sent < len(token_line())
    assert attack(BACKEND, dropped and served()), slow


def test_a_wrong_token_is_dropped_and_nothing_after_it_is_read(bridge: Bridge) -> None:
    subcalls = bridge.subcalls
    assert isinstance(subcalls, EchoSubCalls)
    blocked = True
    for token in ("0" * 64, bridge.token[:-1], bridge.token + "0", ""):
        _, reply = flood(token.encode() + b"\n" + SNEAKY, 0)
        blocked &= reply.count("\n") == 1 and "Unauthorized" in reply  # nothing answered
    assert attack(BACKEND, blocked and "sneaky" not in subcalls.prompts and served())


def test_oversize_authenticated_requests_are_refused_within_held_bytes(bridge: Bridge) -> None:
    bound = BRIDGE_MAX_REQUEST_BYTES + 16 * MIB  # a regressed host would hold 4 x 80 MiB
    with watch() as peaks:
        results = floods(4, token_line() + OPEN_REQUEST, bound)
    refused = all(sent < bound and TOO_LONG in reply for sent, reply in results)
    # Two at once are held (BRIDGE_MAX_HELD_BYTES, with a bytearray's slack), never four.
    within = peaks.rss_growth < BRIDGE_MAX_HELD_BYTES * 1.25 + 32 * MIB
    assert attack(BACKEND, len(results) == 4 and refused and within and served()), peaks


def test_garbage_bytes_are_refused(bridge: Bridge) -> None:
    noise = os.urandom(MIB)
    as_token = [flood(first, 0)[1] for first in (noise, noise.replace(b"\n", b"")[:200] + b"\n")]
    blocked = all("Unauthorized" in reply for reply in as_token)
    with connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(token_line())
        blocked &= b"authenticated" in stream.readline()
        lines = [os.urandom(2_000).replace(b"\n", b"") for _ in range(50)]
        sock.sendall(b"\n".join(lines) + b"\n")
        errors = {json.loads(stream.readline())["error"]["type"] for _ in lines}
        sock.sendall(b'{"id": 9, "method": "llm_query", "params": {"prompt": "after"}}\n')
        after = json.loads(stream.readline())
    blocked &= errors == {"BadRequest"} and after == {"id": 9, "result": "re:after"}
    assert attack(BACKEND, blocked and served())


#: Inside the sandbox: every flood, then a sub-call while 2,000 connections are held.
SANDBOX_MAIN = f"""
    out = {{"no_token": floods(16, b"", 64 * {MIB})}}
    out["wrong_token"] = flood(b"0" * 64 + b"\\n" + {SNEAKY!r}, 0)
    out["garbage"] = flood(os.urandom({MIB}), 0)
    out["oversize"] = flood(token_line() + {OPEN_REQUEST!r}, 80 * {MIB})
    slow = []
    loris = threading.Thread(target=lambda: slow.append(slowloris()))
    loris.start()
    time.sleep(0.05)
    held = hold({HELD})
    ask = ["llm", "--no-input", "while held"]
    legit = subprocess.run(ask, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    loris.join()
    out.update(slowloris=slow[0], legit=legit.stdout, held=len(held), left_open=still_open(held))
    print(json.dumps(out))
"""


@pytest.mark.no_replay("a replay would flood again, and the flood's timings vary")
def test_floods_from_inside_the_bash_sandbox() -> None:
    block = (
        "```bash\n"
        # The sandbox's python3, or else the host interpreter its commands run on.
        'PY=$(command -v python3 || sed -n "s/^exec \\([^ ]*\\) .*/\\1/p" "$(command -v llm)")\n'
        f"\"$PY\" - <<'EOF'\n{script(SANDBOX_MAIN)}\nEOF\n```"
    )
    root = ScriptedModel([block, "```bash\nllm --no-input right after | final\n```"])
    sub = ScriptedModel(lambda messages: "served: " + messages[-1]["content"])
    rlm = RLM(root.model, sub.model, backend="bash", backend_config={"sandbox": True})
    with watch() as peaks:
        result = rlm.completion("flood the bridge", "ctx")
    assert "runs in a sandbox (bubblewrap)" in root.calls[0][0]["content"]
    flooded = next(e for e in result.trajectory if isinstance(e, CodeExecuted))
    assert flooded.error is None, flooded.output
    out = json.loads(next(x for x in flooded.output.splitlines() if x.startswith("{")))
    (seconds, sent), oversize = out["slowloris"], out["oversize"]
    checks = {
        "no token": all(s <= 4 * MIB and "Unauthorized" in r for s, r in out["no_token"]),
        "wrong token": out["wrong_token"][1].count("\n") == 1,
        "garbage": "Unauthorized" in out["garbage"][1],
        "oversize": oversize[0] < 80 * MIB and TOO_LONG in oversize[1],
        "slowloris": seconds < BRIDGE_AUTH_TIMEOUT_S + 1.5 and sent < 65,
        "held": out["held"] == HELD and out["left_open"] == 0,
        "served while held": out["legit"] == "served: while held\n",
        "host files": peaks.fds_growth <= BRIDGE_MAX_CONNECTIONS + FD_SLACK and host_alive(),
        # 16 x 64 MiB if lines without a token were buffered; one long request if not.
        "host memory": peaks.rss_growth < 256 * MIB,
    }
    for name, ok in checks.items():
        assert attack(BACKEND, ok), (name, out, peaks)
    assert not any("sneaky" in m["content"] for call in sub.calls for m in call)
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "served: right after"
