"""The host bridge: auth, malformed input, concurrency, clean shutdown."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyrlm import bridge_client
from polyrlm.bridge import Bridge
from polyrlm.environment import SubCallFailure
from polyrlm.errors import SubCallError
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


def raw(bridge: Bridge, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(bridge.path))
        sock.sendall(payload)
        with sock.makefile("rb") as stream:
            reply: dict[str, Any] = json.loads(stream.readline())
            return reply


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


def test_bad_token_and_malformed_requests_are_refused(bridge: Bridge) -> None:
    bad = {"token": "nope", "id": 7, "method": "llm_query", "params": {"prompt": "x"}}
    assert raw(bridge, json.dumps(bad).encode() + b"\n")["error"]["type"] == "Unauthorized"
    assert raw(bridge, b"{not json\n")["error"]["type"] == "BadRequest"
    wrong = {"token": bridge.token, "id": 1, "method": "llm_batch", "params": {"prompts": [1]}}
    reply = raw(bridge, json.dumps(wrong).encode() + b"\n")
    assert reply["id"] == 1 and "prompts[0] must be a string" in reply["error"]["message"]
    unknown = {"token": bridge.token, "id": 2, "method": "exec", "params": {}}
    assert "unknown method" in raw(bridge, json.dumps(unknown).encode() + b"\n")["error"]["message"]
    assert bridge_client.llm_query("still fine") == "re:still fine"


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=2_000))
def test_arbitrary_bytes_never_harm_the_bridge(bridge: Bridge, junk: bytes) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(bridge.path))
        sock.sendall(junk.replace(b"\n", b" ") + b"\n")
        with sock.makefile("rb") as stream:
            assert b"error" in stream.readline()
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
