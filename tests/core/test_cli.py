"""The command line: run and backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyrlm.cli import main
from polyrlm.testing.scripted import ScriptedModel


def test_run_prints_answer_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("alpha beta gamma")
    root = ScriptedModel(["```python\nFINAL(context.split()[1])\n```"])
    log = tmp_path / "log.jsonl"
    code = main(
        [
            "run",
            "second word?",
            "--context",
            str(ctx),
            "--model",
            root.model,
            "--max-iterations",
            "3",
            "--log",
            str(log),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert out.strip() == "beta"
    assert "stop: answered" in err and "calls: 1" in err and "root: 1 calls" in err
    assert log.exists()


def test_run_json_and_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin"))
    root = ScriptedModel(["```python\nFINAL(len(context))\n```"])
    assert main(["run", "q", "-c", "-", "-m", root.model, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["answer"] == 10 and data["stop_reason"] == "answered"


def test_run_without_answer_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    root = ScriptedModel(["no code"] * 3)
    assert main(["run", "q", "-m", root.model, "--max-iterations", "1"]) == 1
    assert "stop: max_iterations" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "q", "-m", "x", "-c", "/no/such/file"], "cannot read context"),
        (["run", "q", "-m", "x", "-b", "nope"], "unknown backend 'nope'"),
        (["run", "q"], "no model"),
    ],
)
def test_bad_input_is_a_clear_error(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POLYRLM_MODEL", raising=False)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_backends_lists_availability(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    assert "python-inline  available" in capsys.readouterr().out
