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


def test_a_real_run_prints_only_polyrlm_on_stderr(tmp_path: Path) -> None:
    """`polyrlm run` as a user runs it (its own process, litellm's real
    provider code, the price-list variable unset): stderr holds our summary
    and nothing else, no third-party warning."""
    import os
    import subprocess
    import sys

    from polyrlm.testing.fake_server import FakeOpenAIServer

    ctx = tmp_path / "ctx.txt"
    ctx.write_text("alpha beta gamma")
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    env["OPENAI_API_KEY"] = "sk-test"
    with FakeOpenAIServer(lambda body: "```python\nFINAL(context.split()[1])\n```") as srv:
        done = subprocess.run(
            [
                *(str(Path(sys.executable).with_name("polyrlm")), "run", "second word?"),
                *("-c", str(ctx), "-m", "openai/gpt-4.1-mini", "--api-base", srv.base_url),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert (done.returncode, done.stdout.strip()) == (0, "beta"), done.stderr
    ours = ("stop: ", "calls: ", "iterations: ", "  root: ")
    foreign = [line for line in done.stderr.splitlines() if not line.startswith(ours)]
    assert not foreign, done.stderr


def test_run_with_an_answer_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schema = tmp_path / "answer.json"
    schema.write_text(
        json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    )
    root = ScriptedModel(
        [
            "```python\nFINAL({'n': 'many'})\n```",
            "```python\nFINAL({'n': len(context.split())})\n```",
        ]
    )
    ctx = tmp_path / "ctx.txt"
    ctx.write_text("one two three")
    code = main(
        ["run", "How many words?", "-c", str(ctx), "-m", root.model, "--answer-schema", str(schema)]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"n": 3}
    assert "'many' is not of type 'integer'" in root.calls[1][-1]["content"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "No such file"),
        ("{not json", "not JSON"),
        ("[1]", "is an object"),
        ('{"type": "nothing"}', "not a valid JSON Schema"),
    ],
)
def test_a_bad_answer_schema_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, problem: str
) -> None:
    path = tmp_path / "schema.json"
    if content is not None:
        path.write_text(content)
    code = main(["run", "q", "-m", "polyrlm-scripted/none", "--answer-schema", str(path)])
    assert code == 2
    assert problem in capsys.readouterr().err
