"""The host bridge: the token first, limits, malformed input, concurrency, clean shutdown.

Floods (huge lines, held connections, slow clients) are in
tests/security/test_bridge.py."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyrlm import bridge as bridge_mod
from polyrlm import bridge_client
from polyrlm.bridge import Bridge
from polyrlm.environment import SubCallFailure
from polyrlm.errors import PolyrlmError, SubCallError
from polyrlm.testing.contract import EchoSubCalls


class SlowSubCalls(EchoSubCalls):
    def llm_query(self, prompt: str, model: str | None = None) -> str:
        time.sleep(0.5)
        return super().llm_query(prompt, model)

    def llm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        return [SubCallFailure("no") if p == "bad" else "ok:" + p for p in prompts]


@pytest.fixture
def bridge(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bridge]:
    b = Bridge(SlowSubCalls())
    for key, value in b.env.items():
        monkeypatch.setenv(key, value)
    yield b
    b.close()


def connect(bridge: Bridge, token: str | None = None) -> socket.socket:
    """A raw connection; authenticated (greeting read) when ``token`` is given."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(bridge.path))
    if token is not None:
        sock.sendall(token.encode() + b"\n")
        greeting = {"authenticated": True, "max_request_bytes": bridge_mod.BRIDGE_MAX_REQUEST_BYTES}
        assert read_line(sock) == greeting
    return sock


def read_line(sock: socket.socket) -> dict[str, Any] | None:
    """One reply line, byte by byte (nothing read past it); None at the end."""
    data = b""
    while not data.endswith(b"\n"):
        piece = sock.recv(1)
        if not piece:
            return None
        data += piece
    reply: dict[str, Any] = json.loads(data)
    return reply


def raw(bridge: Bridge, payload: bytes) -> dict[str, Any] | None:
    """``payload`` sent on an authenticated connection; the first reply."""
    with connect(bridge, bridge.token) as sock:
        sock.sendall(payload)
        return read_line(sock)


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def request(method: str, **params: Any) -> bytes:
    return json.dumps({"id": 1, "method": method, "params": params}).encode() + b"\n"


def test_client_calls_and_batch_failures(bridge: Bridge) -> None:
    assert bridge_client.llm_query("hi") == "re:hi"
    out = bridge_client.llm_batch(["a", "bad", "c"])
    assert out[0] == "ok:a" and out[2] == "ok:c"
    assert isinstance(out[1], bridge_client.SubCallFailure) and out[1].error == "no"
    assert bridge_client.rlm_query("x", context={"k": [1]}) == "re:x"


def test_sub_call_error_reaches_the_client(bridge: Bridge) -> None:
    with pytest.raises(bridge_client.SubCallError, match="asked to fail"):
        bridge_client.llm_query("fail")


def test_requests_are_served_concurrently(bridge: Bridge) -> None:
    started = time.perf_counter()
    threads = [threading.Thread(target=bridge_client.llm_query, args=("x",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - started < 2.0  # eight 0.5 s calls, not 4 s in a row


def test_the_token_comes_first_and_nothing_is_read_without_it(bridge: Bridge) -> None:
    subcalls = bridge.subcalls
    assert isinstance(subcalls, SlowSubCalls)
    for first in (b"nope\n", b"\n", request("llm_query", prompt="sneaky")):
        with connect(bridge) as sock:
            sock.sendall(first + request("llm_query", prompt="sneaky"))
            reply = read_line(sock)
            assert reply is not None and reply["error"]["type"] == "Unauthorized"
            assert read_line(sock) is None  # closed at once
    # The token with a request's own "token" field, as before: ignored.
    old_style = {"token": bridge.token, "id": 3, "method": "llm_query", "params": {"prompt": "a"}}
    assert raw(bridge, json.dumps(old_style).encode() + b"\n") == {"id": 3, "result": "re:a"}
    assert "sneaky" not in subcalls.prompts


def test_malformed_requests_are_refused_and_the_connection_goes_on(bridge: Bridge) -> None:
    with connect(bridge, bridge.token) as sock:
        for payload, message in (
            (b"{not json\n", "Expecting"),
            (b"[1]\n", "must be a JSON object"),
            (request("llm_batch", prompts=[1]), "prompts[0] must be a string"),
            (request("exec"), "unknown method"),
            (b'{"id": 1, "method": "llm_query", "params": 5}\n', "params must be an object"),
        ):
            sock.sendall(payload)
            reply = read_line(sock)
            assert reply is not None and reply["error"]["type"] == "BadRequest", payload
            assert message in reply["error"]["message"], payload
        sock.sendall(request("llm_query", prompt="a") + request("llm_batch", prompts=["b"]))
        assert read_line(sock) == {"id": 1, "result": "re:a"}  # one at a time, in order
        assert read_line(sock) == {"id": 1, "result": ["ok:b"], "failures": {}}
    assert bridge_client.llm_query("still fine") == "re:still fine"


def test_a_lone_surrogate_comes_back_as_it_went(bridge: Bridge) -> None:
    assert raw(bridge, b'{"id": 1, "method": "llm_query", "params": {"prompt": "\\ud800"}}\n') == {
        "id": 1,
        "result": "re:\ud800",
    }


def test_an_oversize_request_is_refused_by_the_client_and_by_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bridge_mod, "BRIDGE_MAX_REQUEST_BYTES", 200_000)
    b = Bridge(SlowSubCalls())
    try:
        for key, value in b.env.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(bridge_client.SubCallError, match="takes at most 200,000"):
            bridge_client.llm_batch(["x" * 1_000] * 300)  # refused before it is sent
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(b.path))
            sock.sendall(b.token.encode() + b"\n")
            assert read_line(sock) == {"authenticated": True, "max_request_bytes": 200_000}
            sent = 0
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while sent < 50_000_000:  # stops when the host closes, long before
                    sock.sendall(b"x" * 65_536)
                    sent += 65_536
            reply = read_line(sock)
            assert reply is not None and "at most 200,000 bytes" in reply["error"]["message"]
            assert sent < 5_000_000
        assert bridge_client.llm_batch(["x" * 1_000] * 150)[0] == "ok:" + "x" * 1_000
    finally:
        b.close()


def test_past_the_connection_cap_a_call_waits_then_is_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bridge_mod, "BRIDGE_MAX_CONNECTIONS", 2)
    monkeypatch.setattr(bridge_mod, "BRIDGE_AUTH_TIMEOUT_S", 0.5)
    b = Bridge(EchoSubCalls())
    with contextlib.ExitStack() as sockets:
        sockets.callback(b.close)
        for key, value in b.env.items():
            monkeypatch.setenv(key, value)
        idle = [sockets.enter_context(connect(b)) for _ in range(2)]  # held until the timeout
        time.sleep(0.1)
        with connect(b) as third:
            reply = read_line(third)
            assert reply is not None and reply["error"]["type"] == "Busy"
        assert bridge_client.llm_query("waited") == "re:waited"  # once the idle were dropped
        for sock in idle:
            reply = read_line(sock)
            assert reply is not None and reply["error"]["type"] == "Unauthorized"
        wait_for(lambda: b.connections == 0)
        for _ in range(2):  # authenticated: held for good
            sockets.enter_context(connect(b, b.token))
        monkeypatch.setattr(bridge_client, "BUSY_WAIT_S", 0.3)
        with pytest.raises(bridge_client.SubCallError, match=r"stayed busy for 0\.3 s"):
            bridge_client.llm_query("never")


def test_long_requests_wait_for_held_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    cap = 1_000_000
    monkeypatch.setattr(bridge_mod, "BRIDGE_MAX_REQUEST_BYTES", cap)
    monkeypatch.setattr(bridge_mod, "BRIDGE_MAX_HELD_BYTES", cap)  # one long request at once
    b = Bridge(SlowSubCalls())
    try:
        long = request("llm_batch", prompts=["y" * 150_000])
        with connect(b, b.token) as first, connect(b, b.token) as second:
            first.sendall(long[:100_000])  # past one piece: it holds the whole cap
            time.sleep(0.2)
            second.sendall(long)
            second.settimeout(0.5)
            with pytest.raises(TimeoutError):
                second.recv(1)  # waits, unread, while the first holds the bytes
            second.settimeout(10)
            first.sendall(long[100_000:])
            served = {"id": 1, "result": ["ok:" + "y" * 150_000], "failures": {}}
            for sock in (first, second):  # the second once the first gave its bytes back
                with sock.makefile("rb") as stream:
                    assert json.loads(stream.readline()) == served
    finally:
        b.close()


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=2_000), st.booleans())
def test_arbitrary_bytes_never_harm_the_bridge(bridge: Bridge, junk: bytes, authed: bool) -> None:
    with connect(bridge, bridge.token if authed else None) as sock:
        sock.sendall(junk.replace(b"\n", b" ") + b"\n")
        reply = read_line(sock)
        assert reply is not None and "error" in reply
    assert bridge_client.llm_batch(["still"]) == ["ok:still"]


def test_close_removes_the_socket_and_its_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    b = Bridge(EchoSubCalls())
    assert oct(os.stat(b.directory).st_mode)[-3:] == "700"
    b.close()
    b.close()
    assert not b.directory.exists()
    for key, value in b.env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(bridge_client.SubCallError, match="unreachable"):
        bridge_client.llm_query("x")


def test_client_cli_llm_and_batch(
    bridge: Bridge, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO('"a"\n"bad"\n'))
    assert bridge_client.main(["llm_batch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert json.loads(lines[0]) == "ok:a" and json.loads(lines[1]).startswith("[sub-call failed")


def test_sub_call_error_type_matches_host() -> None:
    assert issubclass(SubCallError, Exception)


def test_a_bridge_that_cannot_start_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_threads(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    folders = Path(tempfile.gettempdir()).glob
    before = set(folders("polyrlm-bridge-*"))
    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", out_of_threads)
        with pytest.raises(PolyrlmError, match="did not start: can't start new thread"):
            Bridge(EchoSubCalls())
    assert set(folders("polyrlm-bridge-*")) == before
