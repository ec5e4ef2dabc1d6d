"""sql backend: blocks of statements, rendering and its caps, errors, timeouts, the guide."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("duckdb")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from polyrlm.backends.sql import schema  # noqa: E402
from polyrlm.backends.sql.environment import SqlEnvironment  # noqa: E402
from polyrlm.backends.sql.functions import FUNCTIONS  # noqa: E402
from polyrlm.backends.sql.limits import (  # noqa: E402
    SQL_MEMORY_LIMIT_BYTES,
    SQL_TEMP_LIMIT_BYTES,
    SQL_THREADS,
)
from polyrlm.backends.sql.render import (  # noqa: E402
    CELL_CHARS,
    FEW_ROWS,
    FEW_ROWS_CELL_CHARS,
    ROWS_HEAD,
    ROWS_TAIL,
    cap,
)
from polyrlm.errors import BackendUnavailable  # noqa: E402
from polyrlm.testing.contract import EchoSubCalls, shows  # noqa: E402

TEXT = "\n".join(f"line {i} of the haystack" for i in range(1, 1001))


@pytest.fixture
def env() -> Iterator[SqlEnvironment]:
    with SqlEnvironment(EchoSubCalls(), SqlEnvironment.Config(exec_timeout_s=1.0)) as e:
        e.load_context(TEXT)
        yield e


def test_only_the_last_statement_is_shown_and_changes_are_counted(env: SqlEnvironment) -> None:
    result = env.execute(
        "CREATE TABLE t AS SELECT line_no FROM context WHERE line_no <= 10;\n"
        "INSERT INTO t VALUES (2000), (3000);\n"
        "SELECT count(*) AS n FROM t;"
    )
    assert result.error is None and result.output == "n\n-\n12\n(1 row)"
    assert env.execute("UPDATE t SET line_no = -line_no WHERE line_no > 5").output == (
        "OK, 7 rows updated"
    )
    assert env.execute("DELETE FROM t WHERE line_no < 0").output == "OK, 7 rows deleted"
    assert env.execute("INSERT INTO t SELECT 1 WHERE false").output == "OK, 0 rows inserted"
    assert env.execute("CREATE VIEW w AS SELECT 1 AS one").output == "OK"
    assert env.execute("DROP TABLE t").output == "OK"


def test_rows_are_capped_head_and_tail(env: SqlEnvironment) -> None:
    output = env.execute("SELECT line_no, text FROM context ORDER BY line_no").output
    lines = output.splitlines()
    assert lines[0].split() == ["line_no", "|", "text"]
    body = [line for line in lines[2:] if re.match(r"\s*\d+ \|", line)]
    shown = [int(line.split("|")[0]) for line in body]
    assert shown == list(range(1, ROWS_HEAD + 1)) + list(range(1001 - ROWS_TAIL, 1001))
    assert "..." in lines and lines[-1] == "(1,000 rows; the first 30 and the last 10 shown)"


def test_wide_cells_are_cut_but_a_single_value_is_whole(env: SqlEnvironment) -> None:
    long = "word " * 100 + "\nsecond line"
    many = env.execute(f"SELECT k, '{long}' AS v FROM range({FEW_ROWS + 1}) t(k)").output
    cell = many.splitlines()[2].split(" | ")[1]
    assert len(cell) == CELL_CHARS and cell.endswith("…")
    assert f"longer than {CELL_CHARS} characters were cut" in many
    whole = env.execute(f"SELECT '{long}' AS v").output
    assert whole == f"v\n-\n{long}\n(1 row)"


def test_a_few_rows_show_wider_cells(env: SqlEnvironment) -> None:
    # A search's hit, its needle past the usual cut: seen whole.
    line = "filler " * 100 + "the secret code is 4417"
    few = env.execute(f"SELECT k, '{line}' AS text FROM range({FEW_ROWS}) t(k)").output
    assert few.count("the secret code is 4417") == FEW_ROWS and "were cut" not in few
    huge = env.execute(f"SELECT 1 AS k, repeat('x', {FEW_ROWS_CELL_CHARS * 2}) AS v").output
    cell = huge.splitlines()[2].split(" | ")[1]
    assert len(cell) == FEW_ROWS_CELL_CHARS and cell.endswith("…")
    assert f"longer than {FEW_ROWS_CELL_CHARS:,} characters were cut" in huge


def test_values_render_like_sql(env: SqlEnvironment) -> None:
    output = env.execute(
        "SELECT NULL AS n, true AS b, [1, 2] AS l, {'a': 'x'} AS s, DATE '2024-02-29' AS d"
    ).output
    assert output.splitlines()[2].split(" | ") == [
        "NULL",
        "true",
        "[1, 2]",
        '{"a": "x"}',
        "2024-02-29",
    ]


def test_errors_are_duckdbs_own_and_stop_the_block(env: SqlEnvironment) -> None:
    result = env.execute("SELECT * FROM nowhere")
    assert result.error is not None and result.error.startswith("Catalog Error")
    result = env.execute(
        "CREATE TABLE a AS SELECT 1 AS x; SELECT y FROM a; CREATE TABLE b AS SELECT 2"
    )
    assert result.error is not None
    assert result.error.startswith("Error in statement 2 of 3") and "Binder Error" in result.error
    assert result.output == ""
    assert env.execute("SELECT x FROM a").error is None  # statement 1 ran
    assert env.execute("SELECT * FROM b").error is not None  # statement 3 did not


def test_a_syntax_error_runs_nothing(env: SqlEnvironment) -> None:
    result = env.execute("CREATE TABLE c AS SELECT 1; SELEC oops")
    assert result.error is not None and "Parser Error" in result.error
    assert env.execute("SELECT * FROM c").error is not None
    assert env.execute("-- just a comment").error == "No SQL statement in the block."


def test_a_huge_cross_join_stops_at_the_timeout_and_the_next_statement_works(
    env: SqlEnvironment,
) -> None:
    assert env.execute("CREATE TABLE kept AS SELECT 41 AS x").error is None
    started = time.perf_counter()
    result = env.execute(
        "SELECT count(*) FROM range(1000000000000) AS a CROSS JOIN range(10000) AS b "
        "WHERE (a.range * 7 + b.range) % 1000003 = 17"
    )
    took = time.perf_counter() - started
    assert result.timed_out and result.error is not None and "TimeoutError" in result.error
    assert 0.95 <= took < 3.0
    after = env.execute("SELECT x + 1 AS y FROM kept")
    assert after.error is None and shows(after.output, "42")


def test_the_block_shares_one_time_limit(env: SqlEnvironment) -> None:
    slow = "SELECT count(*) FROM range(1000000000000) AS a WHERE hash(a.range) = 0"
    result = env.execute(
        f"CREATE TABLE first AS SELECT 1 AS one; {slow}; CREATE TABLE never AS SELECT 1"
    )
    assert result.timed_out and "statement 2 of 3" in (result.error or "")
    assert env.execute("SELECT * FROM first").error is None
    assert env.execute("SELECT * FROM never").error is not None


def test_output_is_capped_and_notes_survive() -> None:
    with SqlEnvironment(EchoSubCalls(), SqlEnvironment.Config(capture_limit_chars=2_000)) as env:
        env.load_context("x")
        result = env.execute("SELECT repeat('y', 50000) AS v")
        assert (
            len(result.output) <= 2_000
            and result.truncated_chars == len("v\n-\n\n(1 row)") + 50000 - 2000
        )
        result = env.execute("SELECT coalesce(llm('fail'), 'none') || repeat('z', 50000) AS v")
        assert len(result.output) <= 2_000 and result.truncated_chars > 0
        assert result.output.endswith("First errors: SubCallError: asked to fail")


@given(st.text(max_size=300), st.lists(st.text(max_size=80), max_size=3), st.integers(50, 400))
def test_cap_keeps_within_the_limit(body: str, notes: list[str], limit: int) -> None:
    text, dropped = cap(body, notes, limit)
    tail = "\n".join(notes)
    full = f"{body}\n{tail}" if body and tail else body or tail
    assert len(text) <= limit and dropped == max(0, len(full) - limit)
    if dropped == 0:
        assert text == full
    elif body and len(tail) + 1 < limit:  # the notes are kept whole, the body is cut
        assert text.endswith(tail) and text.startswith(body[: limit - len(tail) - 1])


def test_read_state_lists_tables_views_and_variables(env: SqlEnvironment) -> None:
    env.execute("CREATE TABLE t AS SELECT 1 AS a, 2 AS b; CREATE VIEW v AS SELECT a FROM t")
    env.execute("SET VARIABLE answer_so_far = 'x'")
    state = {v.name: (v.type, v.size) for v in env.read_state().variables}
    assert state == {
        "context": ("view, 2 columns", 1000),
        "t": ("table, 2 columns", 1),
        "v": ("view, 1 columns", None),
        "answer_so_far": ("variable VARCHAR", None),
    }


def test_a_table_named_like_the_context_hides_it_but_ctx_reaches_it(env: SqlEnvironment) -> None:
    env.execute("CREATE TABLE context AS SELECT 1 AS mine")
    assert env.execute("SELECT * FROM context").output.splitlines()[0] == "mine"
    assert env.execute("SELECT count(*) AS n FROM ctx.context").output.splitlines()[2] == "1000"
    names = [v.name for v in env.read_state().variables]
    assert names == ["ctx.context", "context"]


def test_guide_shows_the_live_schema_and_the_functions(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"day": ["2024-01-01", "2024-01-02"], "count": [3, 4]}), path)
    with SqlEnvironment(EchoSubCalls()) as env:
        env.load_context({"notes": TEXT, "events": path})
        guide = env.prompt_guide()
    assert "- notes (view, 1,000 rows): in-memory text of" in guide
    assert "columns: line_no BIGINT, text VARCHAR" in guide
    assert "- events (view, 2 rows): file events.parquet (parquet" in guide
    assert (
        'columns: day VARCHAR, "count" BIGINT' in guide
        or "columns: day VARCHAR, count BIGINT" in guide
    )
    assert "line 1 of the haystack" in guide  # the first rows
    for spec in FUNCTIONS:
        for signature in spec.signatures:
            assert signature in guide
    assert "ATTACH, DETACH, COPY" in guide and "```sql" in guide


def test_every_guide_example_runs(env: SqlEnvironment) -> None:
    blocks = re.findall(r"```sql\n(.*?)```", env.prompt_guide(), flags=re.DOTALL)
    assert len(blocks) >= 5
    for block in blocks:
        result = env.execute(block)
        assert result.error is None, (block, result.error)
    assert env.read_state().answer_ready  # the last example answers


def test_big_csv_is_not_scanned_to_count_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "".join(f"{i},x\n" for i in range(1000)))
    monkeypatch.setattr(schema, "COUNT_SCAN_MAX_BYTES", 100)  # in this process: in-host
    with SqlEnvironment(EchoSubCalls(), SqlEnvironment.Config(worker=False)) as env:
        env.load_context(path)
        guide = env.prompt_guide()
        assert "- context (view, rows not counted): file big.csv (csv" in guide
        assert env.execute("SELECT count(*) AS n FROM context").output.splitlines()[2] == "1000"


@pytest.mark.parametrize("worker", [True, False])
def test_settings_are_applied_locked_and_bad_ones_refused(worker: bool) -> None:
    config = SqlEnvironment.Config(
        threads=1, memory_limit_bytes=512 * 2**20, temp_limit_bytes=2**30, worker=worker
    )
    with SqlEnvironment(EchoSubCalls(), config) as env:
        env.load_context("x")
        output = env.execute(
            "SELECT current_setting('threads') AS t, current_setting('memory_limit') AS m, "
            "current_setting('max_temp_directory_size') AS d, "
            "current_setting('enable_progress_bar') AS p, "
            "current_setting('temp_directory') LIKE '%polyrlm-sql-%' AS own"
        ).output
        assert output.splitlines()[2].split(" | ") == ["1", "512.0 MiB", "1.0 GiB", "false", "true"]
        assert "locked" in (env.execute("SET memory_limit = '100GB'").error or "")
    defaults = SqlEnvironment.Config()
    assert (defaults.threads, defaults.memory_limit_bytes, defaults.temp_limit_bytes) == (
        SQL_THREADS,
        SQL_MEMORY_LIMIT_BYTES,
        SQL_TEMP_LIMIT_BYTES,
    )
    with pytest.raises(ValueError, match="worker_memory_bytes"):
        SqlEnvironment.Config(memory_limit_bytes=8 * 2**30, worker_memory_bytes=4 * 2**30)
    SqlEnvironment.Config(memory_limit_bytes=8 * 2**30, worker_memory_bytes=4 * 2**30, worker=False)


def test_old_duckdb_is_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    monkeypatch.setattr(duckdb, "__version__", "1.3.2")
    with pytest.raises(BackendUnavailable, match=r"duckdb >= 1\.5 .*not 1\.3\.2"):
        SqlEnvironment(EchoSubCalls())
