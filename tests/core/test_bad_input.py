"""Bad input gets a clear error and loses nothing: contexts that are empty,
binary, endless (a FIFO, ``/dev/zero``) or not valid Unicode, and bad
command-line values, are refused up front (exit 2 from the CLI, no traceback);
sizes shown to the root are labelled honestly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from polyrlm import RLM
from polyrlm.cli import main
from polyrlm.contexts import check_context, decode_text, describe_context, load_python_context
from polyrlm.errors import ConfigError
from polyrlm.events import RunStarted
from polyrlm.testing.scripted import ScriptedModel

ANSWER = "```python\nFINAL('ok')\n```"


def polyrlm(*argv: str, stdin: bytes = b"") -> tuple[int, str]:
    """The real command in a process of its own, as a shell runs it: its
    exit code and standard error."""
    done = subprocess.run(
        [sys.executable, "-m", "polyrlm.cli", *argv],
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    return done.returncode, done.stderr.decode("utf-8", "replace")


def refused(context: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_context(context)


# -- check_context ----------------------------------------------------------


def test_an_empty_file_is_refused_but_no_context_is_fine(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    refused(empty, r"'.*empty.txt' is an empty file \(0 bytes\)")
    refused({"notes": empty}, "is an empty file")
    nothing: list[Any] = ["", None, [], {}]
    for value in nothing:
        check_context(value)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"abc\xffdef", "is not UTF-8 text: byte 0xff at offset 3"),
        ("caf\u00e9 ".encode() + b"\xc3", "byte 0xc3 at offset 6"),  # cut off at the end
        (b"text\x00more", "is not text: a NUL byte at offset 4"),
        ("\u20ac".encode("utf-16"), "byte 0xff at offset 0"),  # UTF-16 has a BOM
    ],
)
def test_a_binary_file_is_refused_naming_the_first_bad_byte(
    tmp_path: Path, data: bytes, match: str
) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(data)
    refused(path, match)
    with pytest.raises(ConfigError, match=match):
        load_python_context(path)  # the readers decode strictly too: no mojibake


def test_a_bad_byte_is_found_across_the_scan_s_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("polyrlm.contexts._SCAN_CHUNK_BYTES", 4)
    path = tmp_path / "long.txt"
    text = "ab\u20ac" * 5  # 5 bytes each: sequences straddle every chunk boundary
    path.write_bytes(text.encode() + b"\xe2\x82" + b"zz")
    refused(path, f"byte 0xe2 at offset {len(text.encode()):,}")
    path.write_bytes(text.encode())
    check_context(path)


def test_parsed_formats_are_left_to_their_readers(tmp_path: Path) -> None:
    table = tmp_path / "t.parquet"
    table.write_bytes(b"PAR1\x00\xff\x00PAR1")  # binary by design
    check_context(table)


def test_fifos_devices_and_sockets_are_refused_without_being_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    refused(fifo, "is a FIFO, not a regular file or a directory")  # opening it would block
    refused(Path("/dev/zero"), "is a character device")  # reading it would never end
    monkeypatch.chdir(tmp_path)  # a short name: socket paths are limited
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("s.sock")
        refused(Path("s.sock"), "is a socket")


def test_a_directory_needs_documents_and_each_must_be_text(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    refused(folder, "holds no files")
    (folder / ".hidden").write_bytes(b"\xff")
    (folder / "sub").mkdir()
    refused(folder, "holds no files")
    (folder / "a.txt").write_text("first")
    (folder / "b.txt").write_bytes(b"")  # an empty document is a document
    check_context(folder)
    (folder / "c.md").write_bytes(b"ok\xfe")
    refused(folder, r"context '.*docs/c\.md' is not UTF-8 text: byte 0xfe at offset 2")


def test_missing_and_unreadable_paths(tmp_path: Path) -> None:
    refused(tmp_path / "nope.txt", "cannot read context .*: no such file or directory")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refused(blocker / "inside.txt", "cannot read context .*: Not a directory")
    check_context(tmp_path / "*.csv")  # a pattern: the sql backend expands it


def test_text_with_lone_surrogates_is_refused() -> None:
    broken = b"ok \xff".decode("utf-8", "surrogateescape")
    refused(broken, "not valid Unicode: a lone surrogate U\\+DCFF at character 3")
    refused(["fine", broken], "lone surrogate")
    refused({"a": {"b": broken}}, "lone surrogate")
    check_context("caf\u00e9 \U0001f600")


def test_decode_text_is_strict() -> None:
    assert decode_text("\u00e9".encode(), "x") == "\u00e9"
    with pytest.raises(ConfigError, match="context on standard input is not UTF-8 text"):
        decode_text(b"\x80", "on standard input")


def test_a_jsonl_record_may_hold_a_line_separator(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"t": "a\u2028b"}\n{"t": "c"}\n', encoding="utf-8")  # U+2028 kept raw
    assert load_python_context(path) == [{"t": "a\u2028b"}, {"t": "c"}]


# -- sizes shown to the root ------------------------------------------------


def test_a_file_s_size_is_its_bytes_and_a_directory_counts_its_documents(
    tmp_path: Path,
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("\u00e9t\u00e9\n" * 10, encoding="utf-8")  # 60 bytes, 40 characters
    meta = describe_context(text)
    assert meta["bytes"] == 60 and "chars" not in meta and meta["kind"] == "txt"
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, body in (("a.txt", "x" * 5000), ("b.txt", "y" * 3000), (".skip", "z")):
        (folder / name).write_text(body)
    meta = describe_context(folder)
    assert (meta["kind"], meta["files"], meta["bytes"], meta["est_tokens"]) == (
        "directory",
        2,
        8000,
        2000,
    )
    assert load_python_context(folder) == ["x" * 5000, "y" * 3000]  # the same documents


def test_the_root_is_shown_the_directory_s_real_size(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("alpha " * 1000)
    root = ScriptedModel([ANSWER])
    result = RLM(root.model).completion("q", folder)
    start = next(e for e in result.trajectory if isinstance(e, RunStarted))
    assert start.context_meta["bytes"] == 6000 and start.context_meta["files"] == 1
    assert '"bytes": 6000' in root.calls[0][0]["content"]  # the system prompt


def test_a_binary_document_in_a_directory_fails_the_run_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("fine")
    (folder / "b.txt").write_bytes(b"\x00\x01")
    with pytest.raises(ConfigError, match=r"b\.txt' is not text: a NUL byte at offset 0"):
        RLM(ScriptedModel([ANSWER]).model).completion("q", folder)


def test_the_library_refuses_an_empty_file_before_opening_its_log(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    log = tmp_path / "old.jsonl"
    log.write_text("kept\n")
    with pytest.raises(ConfigError, match="is an empty file"):
        RLM(ScriptedModel([ANSWER]).model, log=log).completion("q", empty)
    assert log.read_text() == "kept\n"


# -- the command line ---------------------------------------------------------


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("polyrlm: error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-calls", "-1"], "bad --max-calls -1: input should be greater than or equal to 1"),
        (["--max-calls", "0"], "bad --max-calls 0"),
        (["--max-tokens", "0"], "bad --max-tokens 0"),
        (["--max-iterations", "0"], "bad --max-iterations 0"),
        (["--max-depth", "-1"], "bad --max-depth -1"),
        (["--max-cost", "0"], "bad --max-cost 0.0: input should be greater than 0"),
        (["--max-cost", "nan"], "bad --max-cost nan"),
        (["--max-seconds", "-5"], "bad --max-seconds -5.0"),
        (["--max-concurrency", "0"], "bad --max-concurrency 0: must be at least 1"),
        (["--log", ""], "bad --log: an empty path"),
        (["--cache", ""], "bad --cache: an empty path"),
        (["--context", ""], "bad --context: an empty path"),
    ],
)
def test_bad_run_values_are_one_line_errors(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert message in _cli_error(["run", "q", "-m", "x", *flags], capsys)


def test_bad_output_paths_are_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    run = ["run", "q", "-m", "x"]
    assert "a directory (name the file" in _cli_error([*run, "--log", str(tmp_path)], capsys)
    err = _cli_error([*run, "--log", str(blocker / "run.jsonl")], capsys)
    assert "is not a directory" in err
    assert "not a directory" in _cli_error([*run, "--cache", str(blocker)], capsys)
    err = _cli_error([*run, "-c", str(blocker), "--log", str(blocker)], capsys)
    assert "it would overwrite or join the context" in err and blocker.read_text() == "x"
    err = _cli_error([*run, "-c", str(tmp_path), "--log", str(tmp_path / "in" / "r.jsonl")], capsys)
    assert "it would overwrite or join the context" in err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        err = _cli_error([*run, "--log", str(locked / "run.jsonl")], capsys)
        assert "permission denied" in err


def test_bad_contexts_exit_2_and_keep_the_old_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text("an earlier run\n")
    empty, binary, fifo = tmp_path / "empty.txt", tmp_path / "img.png", tmp_path / "fifo"
    empty.write_bytes(b"")
    binary.write_bytes(b"\x89PNG\r\n\x1a\n")
    os.mkfifo(fifo)
    folder = tmp_path / "nothing"
    folder.mkdir()
    root = ScriptedModel([ANSWER])
    for context, message in (
        (empty, "is an empty file"),
        (binary, "is not UTF-8 text: byte 0x89 at offset 0"),
        (fifo, "is a FIFO"),
        (Path("/dev/zero"), "is a character device"),
        (folder, "holds no files"),
    ):
        argv = ["run", "q", "-m", root.model, "-c", str(context), "--log", str(log)]
        assert message in _cli_error(argv, capsys)
    assert log.read_text() == "an earlier run\n" and root.calls == []


def test_stdin_is_decoded_strictly_and_may_not_be_empty() -> None:
    code, err = polyrlm("run", "q", "-m", "x", "-c", "-", stdin=b"caf\xe9 au lait")
    assert code == 2 and "Traceback" not in err
    assert "context on standard input is not UTF-8 text: byte 0xe9 at offset 3" in err
    code, err = polyrlm("run", "q", "-m", "x", "-c", "-")
    assert code == 2 and "context on standard input is empty" in err


def test_stdin_from_a_device_is_refused_before_reading() -> None:
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run(
            [sys.executable, "-m", "polyrlm.cli", "run", "q", "-m", "x", "-c", "-"],
            stdin=zero,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2 and "standard input is a device" in done.stderr


def test_a_real_process_prints_no_traceback_for_a_bad_budget() -> None:
    code, err = polyrlm("run", "q", "-m", "x", "--max-calls", "-1")
    assert code == 2 and err.strip() == (
        "polyrlm: error: bad --max-calls -1: input should be greater than or equal to 1"
    )


def test_replay_will_not_overwrite_its_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "run.jsonl"
    RLM(ScriptedModel([ANSWER]).model, log=log).completion("q", "c")
    before = log.read_bytes()
    err = _cli_error(["replay", str(log), "--log", str(log)], capsys)
    assert "it is the record being replayed" in err and log.read_bytes() == before


def test_bench_budget_values_name_their_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "sniah", "--max-cost", "-1", "--out", str(tmp_path)]
    assert "bad --max-cost -1.0" in _cli_error(argv, capsys)
