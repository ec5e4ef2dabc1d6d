"""`polyrlm bench fanout-e2e` at toy size: the JSON has a row and a ratio per
latency (no timing target: those are for the benchmark, not unit tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyrlm.plugins.bench.fanout_e2e import PHASES, main, make_context


def test_make_context_has_the_prompts_first_and_the_length_asked() -> None:
    text = make_context(20, 20_000)
    lines = text.splitlines()
    assert len(text) == 20_000
    assert lines[:20] == [f"prompt {i}" for i in range(20)]
    assert not any(line.startswith("prompt") for line in lines[20:])


def test_main_writes_rows_and_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fanout_e2e.json"
    argv = ["--backends", "python-inline", "--n", "20", "--concurrency", "4"]
    argv += ["--context-chars", "20000", "--repeats", "1", "--out", str(out)]
    code = main([*argv, "--fast-latency", "0", "--slow-latency", "0"])
    data = json.loads(out.read_text())
    assert code == (0 if data["ok"] else 1)
    assert data["benchmark"] == "fanout_e2e" and data["n"] == 20 and data["concurrency"] == 4
    rows = data["results"]["python-inline"]
    assert set(rows) == {"fast", "slow"}
    for row in rows.values():
        assert row["e2e_s"] > 0 and row["bare_s"] > 0
        assert row["ratio"] == pytest.approx(row["e2e_s"] / row["bare_s"])
        assert set(row["phases_s"]) == set(PHASES)
        assert sum(row["phases_s"].values()) == pytest.approx(row["e2e_s"], abs=0.05)
    printed = capsys.readouterr().out
    assert "python-inline" in printed and f"wrote {out}" in printed
