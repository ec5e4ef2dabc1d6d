"""`polyrlm bench`: tasks and suites from the command line, in-process."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from polyrlm.cli import main
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.testing.scripted import ScriptedModel
from tests.plugins.bench.test_methods import FIND, needle_or_unknown


def test_sniah_strategy_table_lists_an_unknown_backend_as_unavailable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "sniah", "--backends", "python-inline,nonexistent", "--sizes", "10000"]
    assert main([*argv, "--method", "strategy", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "sniah (string match), method strategy" in out
    inline = [line for line in out.splitlines() if "python-inline" in line and "grep" in line]
    assert len(inline) == 1 and "1.000" in inline[0] and "knows the needle's form" in inline[0]
    missing = [line for line in out.splitlines() if "nonexistent" in line]
    assert len(missing) == 3  # grep, map-reduce and filter-map
    assert all("unavailable: not registered" in m for m in missing)
    assert any("needs --sub-model" in line for line in out.splitlines() if "map-reduce" in line)
    data = json.loads((tmp_path / "sniah.json").read_text())
    assert data["benchmark"] == "sniah" and data["settings"]["sizes"] == [10_000]
    statuses = {(r["backend"], r["strategy"]): r["status"] for r in data["runs"]}
    assert statuses[("python-inline", "grep")] == "ok"
    assert statuses[("nonexistent", "grep")].startswith("unavailable")
    if importlib.util.find_spec("matplotlib") is not None:
        png = tmp_path / "sniah.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in out
    else:
        assert 'no plot: matplotlib is not installed (pip install "polyrlm[bench]")' in err


def test_bench_help_lists_tasks_from_the_hook_and_suites(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("sniah", "oolong", "oolong-pairs", "codeqa", "multihop", "perf", "fanout", "exec"):
        assert f"\n  {name} " in out
    assert main(["bench"]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench", "nosuch"], "unknown benchmark 'nosuch'"),
        (["bench", "sniah", "--sizes", "ten"], "bad size 'ten'"),
        (["bench", "sniah", "--sizes", "10"], "out of range"),
        (["bench", "sniah", "--method", "rlm", "--model", ""], "needs a model"),
        (["bench", "sniah", "--strategies", "nope"], "has no strategy nope"),
    ],
)
def test_bad_input_is_a_clear_error(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path)] if len(argv) > 2 else argv) == 2
    assert message in capsys.readouterr().err


def test_rlm_method_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = ScriptedModel([FIND])
    argv = ["bench", "sniah", "--backends", "python-inline", "--sizes", "2000", "--method", "rlm"]
    argv += ["--model", root.model, "--max-iterations", "2", "--out", str(tmp_path), "--no-plot"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "python-inline" in line)
    assert " rlm " in row and "1.000" in row
    assert not (tmp_path / "sniah.png").exists()


def test_base_method_against_an_openai_compatible_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeOpenAIServer(needle_or_unknown) as server:
        argv = ["bench", "sniah", "--sizes", "2000,4000", "--method", "base", "--no-plot"]
        argv += ["--model", "openai/fake", "--api-base", server.base_url, "--out", str(tmp_path)]
        assert main(argv) == 0
        assert all(call.status == 200 for call in server.calls) and len(server.calls) == 2
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if " base " in line]
    assert len(rows) == 2 and all("1.000" in r for r in rows)
    data = json.loads((tmp_path / "sniah.json").read_text())
    assert "api_key" not in data["settings"]


def test_existing_suites_still_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "exec.json"
    argv = ["bench", "exec", "--backends", "python-inline", "--repeats", "5"]
    assert main([*argv, "--out", str(out_file)]) == 0
    assert json.loads(out_file.read_text())["benchmark"] == "exec_overhead"
    assert "bare exec" in capsys.readouterr().out


def test_a_run_that_errored_makes_bench_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = ScriptedModel(lambda messages: str(1 / 0))  # every root call fails
    argv = ["bench", "sniah", "--backends", "python-inline", "--sizes", "2000", "--method", "rlm"]
    argv += ["--model", broken.model, "--out", str(tmp_path), "--no-plot"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "polyrlm bench: 1 of 1 runs failed" in err
    (run,) = json.loads((tmp_path / "sniah.json").read_text())["runs"]
    assert run["status"] == "error" and "ZeroDivisionError" in run["detail"]
    assert "wrote" in out  # the table and the JSON are still written


def test_an_unavailable_backend_alone_is_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "sniah", "--backends", "nonexistent", "--sizes", "2000", "--no-plot"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "runs failed" not in capsys.readouterr().err
