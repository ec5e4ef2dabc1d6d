"""sql backend: every context kind becomes tables, and the user's data stays untouched.

The tables are read straight from the connection, so most tests open the
database in the host (``worker=False``: the same engine the worker runs);
one test checks that each kind reaches a worker process unchanged."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

duckdb = pytest.importorskip("duckdb")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

from polyrlm.backends.sql import lines, sources  # noqa: E402
from polyrlm.backends.sql.environment import SqlEnvironment  # noqa: E402
from polyrlm.errors import ConfigError  # noqa: E402
from polyrlm.testing.contract import EchoSubCalls, opened_envs  # noqa: E402


@pytest.fixture
def make() -> Iterator[Any]:
    with opened_envs(SqlEnvironment, worker=False) as factory:
        yield factory


def rows(env: SqlEnvironment, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql``, read straight from the connection."""
    return [tuple(r) for r in env.db.engine.conn.sql(sql).fetchall()]  # type: ignore[attr-defined]


def in_host(**config: Any) -> SqlEnvironment:
    return SqlEnvironment(EchoSubCalls(), SqlEnvironment.Config(worker=False, **config))


def run_ok(env: SqlEnvironment, sql: str) -> str:
    result = env.execute(sql)
    assert result.error is None, result.error
    return result.output


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- text --------------------------------------------------------------------------------


def test_text_lines_follow_str_split(make: Any) -> None:
    text = "alpha\r\nbeta\n\nγάμμα 𝄞\n"
    env = make(text)
    got = rows(env, "SELECT line_no, text FROM context ORDER BY line_no")
    assert got == [(i + 1, line) for i, line in enumerate(text.split("\n"))]
    assert rows(env, "SELECT string_agg(text, chr(10) ORDER BY line_no) FROM context") == [(text,)]


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_text_round_trips_and_length_formula(text: str) -> None:
    with in_host() as env:
        env.load_context(text)
        got = rows(env, "SELECT sum(length(text)) + count(*) - 1 FROM context")
        assert got == [(len(text),)]
        joined = rows(env, "SELECT string_agg(text, chr(10) ORDER BY line_no) FROM context")
        assert joined == [(text,)]


def test_the_worker_never_imports_pandas() -> None:
    # pyarrow would import it (a quarter second of every completion's start).
    env = SqlEnvironment(EchoSubCalls(), SqlEnvironment.Config())
    try:
        env.load_context("alpha\nbeta\n")
        result = env.execute("SELECT final(count(*) || ' ' || max(llm(text))) FROM context;")
        assert result.error is None, result.error
        worker = env.db.worker  # type: ignore[attr-defined]
        maps = Path(f"/proc/{worker.process.pid}/maps").read_text()
        assert "pandas" not in maps, "the DuckDB worker loaded pandas"
    finally:
        env.close()


def test_lone_surrogates_keep_the_length(make: Any) -> None:
    text = "a\udc80b\nc"
    env = make(text)
    assert rows(env, "SELECT sum(length(text)) + count(*) - 1 FROM context") == [(len(text),)]


def test_text_spread_over_several_view_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Views hold 32-bit offsets: past a segment, rows point into the next buffer.
    monkeypatch.setattr(lines, "VIEW_SEGMENT_BYTES", 16)
    text = "\n".join(f"line {i} " + "x" * (i % 17) for i in range(200))
    table = sources.plan_sources(text)[0].arrow
    (arrow,) = table.values()
    assert arrow.column("text").num_chunks == 1
    assert len(arrow.column("text").chunk(0).buffers()) > 3  # validity, views, >1 data buffer
    with in_host() as env:
        env.load_context(text)
        got = rows(env, "SELECT text FROM context ORDER BY line_no")
        assert [r[0] for r in got] == text.split("\n")


def test_text_file_is_memory_mapped_lines(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("one\ntwo words\n", encoding="utf-8")
    env = make(path)
    assert rows(env, "SELECT * FROM context ORDER BY line_no") == [
        (1, "one"),
        (2, "two words"),
        (3, ""),
    ]
    source = env.db.engine.sources[0]
    assert source.kind == "text" and "memory-mapped" in source.origin


def test_text_file_not_utf8_is_decoded_with_replacements(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("café\nnaïve".encode("latin-1"))
    env = make(path)
    assert rows(env, "SELECT text FROM context ORDER BY line_no") == [
        ("caf\ufffd",),
        ("na\ufffdve",),
    ]
    assert "not UTF-8" in env.db.engine.sources[0].origin


# -- documents, records, tables ------------------------------------------------------------


def test_documents_are_numbered_from_zero(make: Any) -> None:
    env = make(["first doc", "second\ndoc", {"k": 1}])
    assert rows(env, "SELECT doc_id, text FROM context ORDER BY doc_id") == [
        (0, "first doc"),
        (1, "second\ndoc"),
        (2, '{"k": 1}'),
    ]


def test_list_of_records_is_a_table(make: Any) -> None:
    env = make([{"a": 1, "b": "x"}, {"a": 2}])
    assert rows(env, "SELECT a, b FROM context ORDER BY a") == [(1, "x"), (2, None)]


def test_dataframe_is_a_table_and_stays_untouched(make: Any) -> None:
    frame = pd.DataFrame({"id": [1, 2, 3], "name": ["a", "b", "c"], "score": [0.5, 1.5, 2.5]})
    before = frame.copy()
    env = make(frame)
    assert rows(env, "SELECT id, name, score FROM context ORDER BY id") == [
        (1, "a", 0.5),
        (2, "b", 1.5),
        (3, "c", 2.5),
    ]
    types = dict(
        rows(
            env, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'context'"
        )
    )
    assert types == {"id": "BIGINT", "name": "VARCHAR", "score": "DOUBLE"}
    for sql in (
        "DELETE FROM context",
        "UPDATE context SET id = 0",
        "INSERT INTO context VALUES (9, 'z', 0)",
        "DROP TABLE context",
        "DROP VIEW context",
        "ALTER VIEW context RENAME TO c",
    ):
        assert env.execute(sql).error is not None, sql
    run_ok(env, "CREATE TABLE scratch AS SELECT * FROM context WHERE id > 1")
    assert "OK, 1 row deleted" in run_ok(env, "DELETE FROM scratch WHERE id = 2")
    assert rows(env, "SELECT count(*) FROM context") == [(3,)]
    pd.testing.assert_frame_equal(frame, before)


def test_arrow_table(make: Any) -> None:
    env = make(pa.table({"k": ["u", "v"], "n": [1, 2]}))
    assert rows(env, "SELECT k, n FROM context ORDER BY n") == [("u", 1), ("v", 2)]


def test_named_contexts_are_one_table_each(make: Any, tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,x\n")
    env = make({"notes": "hi\nthere", "docs": ["d0", "d1"], "rows": csv, "Mixed Case": "m"})
    assert rows(env, "SELECT count(*) FROM notes") == [(2,)]
    assert rows(env, "SELECT text FROM docs WHERE doc_id = 1") == [("d1",)]
    assert rows(env, "SELECT a, b FROM rows") == [(1, "x")]
    assert rows(env, 'SELECT text FROM "Mixed Case"') == [("m",)]
    names = {v.name for v in env.read_state().variables}
    assert {"notes", "docs", "rows", '"Mixed Case"'} <= names


@pytest.mark.parametrize(
    "context",
    [{"a": "x", "A": "y"}, {"": "x"}, {"__polyrlm_x": "x"}],
    ids=["case-duplicate", "empty", "reserved"],
)
def test_bad_names_are_refused(make: Any, context: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        make(context)


def test_every_kind_reaches_a_worker_unchanged(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,x\n2,y\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("one\ntwo words\n", encoding="utf-8")
    shop = tmp_path / "shop.duckdb"
    with duckdb.connect(str(shop)) as conn:
        conn.execute("CREATE TABLE orders AS SELECT 1 AS id, 'tea' AS item")
    frame = pd.DataFrame({"id": [1, 2], "name": ["a", "b"], "score": [0.5, 1.5]})
    contexts: list[tuple[Any, str]] = [
        ("alpha\r\nbeta\n\nγάμμα 𝄞 a\udc80b\n", "SELECT * FROM context"),
        (["first doc", "second\ndoc", {"k": 1}], "SELECT * FROM context"),
        ([{"a": 1, "b": "x"}, {"a": 2}], "SELECT * FROM context"),
        (frame, "SELECT * FROM context"),
        (pa.table({"k": ["u", "v"], "n": [1, 2]}), "SELECT * FROM context"),
        (notes, "SELECT * FROM context"),
        (
            {"notes": "hi\nthere", "docs": ["d0"], "rows": csv, "nested": {"x": [1]}, "shop": shop},
            "SELECT (SELECT string_agg(text, '|') FROM notes) AS n, (SELECT text FROM docs) AS d, "
            "(SELECT sum(a) FROM rows) AS r, (SELECT text FROM nested) AS j, "
            "(SELECT item FROM shop.orders) AS s",
        ),
    ]
    for context, sql in contexts:
        with in_host() as host, SqlEnvironment(EchoSubCalls()) as worker:
            host.load_context(context)
            worker.load_context(context)
            assert worker.execute(sql).output == host.execute(sql).output, context
            assert worker.read_state().variables == host.read_state().variables
            assert worker.prompt_guide().replace("a worker", "the host") == host.prompt_guide()


# -- files -------------------------------------------------------------------------------


def test_csv_tsv_json_jsonl_files(make: Any, tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("id,name\n1,a\n2,b\n")
    (tmp_path / "t.tsv").write_text("id\tname\n1\ta\n")
    (tmp_path / "t.json").write_text(json.dumps([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]))
    (tmp_path / "t.jsonl").write_text('{"id": 1, "name": "a"}\n{"id": 2, "name": "b"}\n')
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(b"id,name\n1,a\n2,b\n3,c\n"))
    cases = (("t.csv", 2), ("t.tsv", 1), ("t.json", 2), ("t.jsonl", 2), ("t.csv.gz", 3))
    for name, count in cases:
        env = make(tmp_path / name)
        assert rows(env, "SELECT count(*), min(name) FROM context") == [(count, "a")], name
        assert env.db.engine.sources[0].kind == name.split(".")[1]


def test_parquet_is_read_lazily_from_the_file(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3]}), path)
    env = make(path)
    assert rows(env, "SELECT sum(n) FROM context") == [(6,)]
    # The table is a view over the file, not a copy: the file's new rows show up.
    pq.write_table(pa.table({"n": [10, 20]}), path)
    assert rows(env, "SELECT sum(n) FROM context") == [(30,)]
    assert env.db.engine.sources[0].arrow == {} and env.db.engine.sources[0].files == (
        str(path.resolve()),
    )


def test_glob_and_directory_of_parquet(make: Any, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"k": [i], "v": [f"x{i}"]}), parts / f"p{i}.parquet")
    (parts / ".hidden").write_text("ignored")
    for context in (parts, parts / "p*.parquet"):
        env = make(context)
        assert rows(env, "SELECT list(k ORDER BY k) FROM context") == [([0, 1, 2],)]


def test_directory_of_text_files_is_documents(make: Any, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "b.md").write_text("bee\nline")
    (docs / "a.txt").write_text("ay")
    env = make(docs)
    assert rows(env, "SELECT doc_id, text, path FROM context ORDER BY doc_id") == [
        (0, "ay", "a.txt"),
        (1, "bee\nline", "b.md"),
    ]


def test_duckdb_database_is_attached_read_only(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "shop.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE orders AS SELECT range AS id, range * 10 AS amount FROM range(5)")
    before = digest(path)
    env = make({"shop": path})
    assert rows(env, "SELECT sum(amount) FROM orders") == [(100,)]
    assert rows(env, "SELECT count(*) FROM shop.orders") == [(5,)]
    for sql in (
        "DROP TABLE orders",
        "DROP TABLE shop.orders",
        "DELETE FROM orders",
        "UPDATE orders SET id = 0",
    ):
        result = env.execute(sql)
        assert result.error is not None and "read-only" in result.error, sql
    for sql in ("DETACH shop", "ATTACH 'x.duckdb' AS y", "USE shop"):
        assert (env.execute(sql).error or "").startswith("Refused"), sql
    run_ok(env, "CREATE TABLE mine AS SELECT * FROM orders WHERE amount > 20")
    assert rows(env, "SELECT count(*) FROM mine") == [(2,)]
    env.close()
    assert digest(path) == before
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM orders").fetchall() == [(5,)]


def test_single_database_context_is_catalog_context(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "one.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
    env = make(path)
    assert rows(env, "SELECT a FROM context.t") == [(1,)]
    assert [v.name for v in env.read_state().variables] == ["context.t"]


@pytest.mark.parametrize("name", ["missing.csv", "empty_dir", "nothing*.parquet"])
def test_unreadable_paths_are_config_errors(make: Any, tmp_path: Path, name: str) -> None:
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ConfigError, match="cannot read context"):
        make(tmp_path / name)


def test_bad_file_content_is_a_config_error(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match="cannot load the context"):
        make(path)


def test_unsupported_value_and_second_load_are_refused(make: Any) -> None:
    with pytest.raises(ConfigError, match="cannot load a object"):
        make(object())
    env = make("text")
    with pytest.raises(ConfigError, match="already holds a context"):
        env.load_context("again")


# -- what the model's SQL can reach --------------------------------------------------------


def test_no_other_host_file_can_be_read_or_written(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"n": [1]}), path)
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden")
    env = make(path)
    for sql in (
        f"SELECT * FROM read_text('{secret}')",
        f"SELECT * FROM read_csv('{secret}')",
        f"SELECT * FROM glob('{tmp_path}/*')",
    ):
        error = env.execute(sql).error or ""
        assert "Permission Error" in error, sql
    before = digest(path)
    for sql in (
        f"COPY (SELECT 2 AS n) TO '{path}' (FORMAT parquet)",
        f"PREPARE p AS COPY (SELECT 2 AS n) TO '{path}' (FORMAT parquet, USE_TMP_FILE false)",
        f"EXPORT DATABASE '{tmp_path / 'out'}'",
        "INSTALL httpfs",
        "LOAD httpfs",
    ):
        assert (env.execute(sql).error or "").startswith("Refused"), sql
    assert digest(path) == before and not (tmp_path / "out").exists()
    assert "locked" in (env.execute("SET enable_external_access = true").error or "")
    assert (env.execute("DROP VIEW __polyrlm_data_x").error or "").startswith("Refused")


def test_the_extensions_it_uses_ship_inside_the_duckdb_wheel() -> None:
    """DuckDB 2 no longer bundles every extension, and nothing may be
    downloaded here: the readers and functions the backend uses (JSON and
    Parquet files, ICU collations and time zones, the core functions) must be
    linked into the wheel itself."""
    conn = duckdb.connect()
    rows = conn.execute(
        "SELECT extension_name, install_mode FROM duckdb_extensions() "
        "WHERE extension_name IN ('core_functions', 'icu', 'json', 'parquet')"
    ).fetchall()
    used = ("core_functions", "icu", "json", "parquet")
    assert dict(rows) == dict.fromkeys(used, "STATICALLY_LINKED")
