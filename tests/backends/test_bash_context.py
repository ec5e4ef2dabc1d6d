"""The bash backend's context conventions: text, documents, tables, named
contexts and paths as files; bad contexts refused clearly."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polyrlm.backends.bash import context_files
from polyrlm.backends.bash.environment import BashEnvironment
from polyrlm.backends.bash.json_lines import from_json, to_json
from polyrlm.errors import ConfigError
from polyrlm.testing.contract import opened_envs

Make = Callable[..., BashEnvironment]


@pytest.fixture(params=[True, False], ids=["sandboxed", "unsandboxed"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    with opened_envs(BashEnvironment, sandbox=request.param) as factory:
        yield factory


def test_text_is_the_exact_text(make: Make) -> None:
    text = "naïve café ✓\nno newline at the end"
    env = make(text)
    out = env.execute('wc -m < "$CONTEXT"; basename "$CONTEXT"; tail -c 6 "$CONTEXT"').output
    assert out.split("\n") == [str(len(text)), "context.txt", "he end"]
    assert f"a text file of {len(text)} characters, 2 lines" in env.prompt_guide()


def test_documents_are_files_in_order(make: Make) -> None:
    docs = [f"document {i}\n" for i in range(12)] + [{"id": 12}]
    env = make(docs)
    out = env.execute(
        'ls "$CONTEXT_DIR" | head -3; ls "$CONTEXT" | wc -l; cat "$CONTEXT"/000011.txt'
    )
    assert out.output.splitlines() == [
        "000000.txt",
        "000001.txt",
        "000002.txt",
        "13",
        "document 11",
    ]
    same = env.execute('[ "$CONTEXT" = "$CONTEXT_DIR" ] && cat "$CONTEXT"/000012.json')
    assert json.loads(same.output) == {"id": 12}
    assert "13 documents, one file each" in env.prompt_guide()


def test_a_table_is_csv(make: Make) -> None:
    frame = pd.DataFrame({"name": ["ann", "bob"], "age": [31, 42]})
    env = make(frame)
    assert env.execute('cat "$CONTEXT"').output == "name,age\nann,31\nbob,42\n"
    assert "columns: name, age" in env.prompt_guide()


def test_named_contexts_are_files_named_after_their_keys(make: Make, tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# notes\n")
    named = {
        "doc": "text",
        "a b/../c": "odd",
        "A_B_.._C": "clash",
        "table": pd.DataFrame({"x": [1]}),
        "docs": ["p", "q"],
        "meta": {"k": [1, 2]},
        "file": tmp_path / "notes.md",
    }
    env = make(named)
    listing = env.execute('cd "$CONTEXT" && find . -type f -o -type l | sort').output.split()
    assert listing == [
        "./A_B_.._C-2.txt",
        "./a_b_.._c.txt",
        "./doc.txt",
        "./docs/000000.txt",
        "./docs/000001.txt",
        "./file.md",
        "./meta.json",
        "./table.csv",
    ]
    assert env.execute('cat "$CONTEXT"/file.md "$CONTEXT"/doc.txt').output == "# notes\ntext"
    assert "7 named contexts" in env.prompt_guide()


def test_a_path_is_used_in_place_not_copied(make: Make, tmp_path: Path) -> None:
    big = tmp_path / "big.log"
    big.write_bytes(b"x" * 1_000_000 + b"\nneedle\n")
    env = make(big)
    out = env.execute('basename "$CONTEXT"; grep -c needle "$CONTEXT"; stat -L -c %i "$CONTEXT"')
    assert out.output.split() == ["big.log", "1", str(big.stat().st_ino)]
    assert len(list(env.dirs.context.iterdir())) == 1
    assert all(p.stat().st_size == 0 or p.is_symlink() for p in env.dirs.context.iterdir())


def test_a_directory_is_the_context_folder(make: Make, tmp_path: Path) -> None:
    for name in ("b.txt", "a.txt"):
        (tmp_path / name).write_text(name)
    env = make(tmp_path)
    assert env.execute('ls "$CONTEXT_DIR"; cat "$CONTEXT"/a.txt').output == "a.txt\nb.txt\na.txt"


def test_parquet_becomes_csv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    source = tmp_path / "t.parquet"
    source.write_bytes(b"PAR1")  # read by the stand-in reader below: no pyarrow needed
    monkeypatch.setattr(context_files, "_read_parquet", lambda p: pd.DataFrame({"v": [p.name]}))
    plan = context_files.place_context(source, tmp_path / "ctx", link=True)
    assert plan.context == "t.csv" and "converted to CSV" in plan.hint
    assert (tmp_path / "ctx" / "t.csv").read_text() == "v\nt.parquet\n"


def test_bad_contexts_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        context_files.place_context(tmp_path / "missing.txt", tmp_path / "c", link=True)
    with pytest.raises(ConfigError, match="cannot write a object context"):
        context_files.place_context(object(), tmp_path / "c", link=True)


def test_loading_again_replaces_the_context_and_keeps_files(make: Make) -> None:
    env = make("first")
    env.execute("echo kept > mine.txt")
    env.load_context("second!")
    assert env.execute('cat "$CONTEXT" mine.txt').output == "second!kept\n"


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)))
def test_to_json_and_from_json_round_trip(lines: list[str]) -> None:
    lines = [line.replace("\r", "").replace("\n", " ") for line in lines]  # one line each
    lines = [line for line in lines if line.strip()]  # from_json skips blank lines
    encoded = list(to_json((f"{line}\n" for line in lines), (), None, None))
    assert len(encoded) == len(lines) and all("\n" not in e for e in encoded)
    decoded = list(from_json(f"{e}\n" for e in encoded))
    assert decoded == lines


def test_to_json_files_and_prompt(tmp_path: Path) -> None:
    (tmp_path / "p1").write_text("one\ntwo\n")
    (tmp_path / "p2").write_text("three")
    files = [str(tmp_path / "p1"), str(tmp_path / "p2")]
    items = list(from_json(to_json([], files, "Q:", None)))
    assert items == ["Q:\n\none\ntwo\n", "Q:\n\nthree"]
    assert list(to_json([], [], None, "a\tb")) == ['"a\\tb"']
