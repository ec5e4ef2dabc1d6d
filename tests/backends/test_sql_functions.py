"""sql backend: llm(), rlm() and final() as vectorised SQL functions."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

from polyrlm.backends.sql.environment import SqlEnvironment
from polyrlm.environment import SubCallFailure


class FakeSubCalls:
    """Answers ``<model>:<prompt>``; a prompt starting with ``fail`` fails on
    its own (as the broker's batches do); records every batch; can be slow."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[tuple[list[str], str | None]] = []
        self.children: list[tuple[str, Any]] = []
        self.schemas: list[Any] = []
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def _reply(self, prompt: str, model: str | None) -> str:
        if prompt.startswith("fail"):
            return SubCallFailure(f"refused {prompt}")
        return f"{model or 'sub'}:{prompt}"

    def llm_query(self, prompt: str, model: str | None = None) -> str:
        return self.llm_batch([prompt], model)[0]

    def llm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: Any = None
    ) -> list[Any]:
        with self._lock:
            self.batches.append((list(prompts), model))
            self.threads.add(threading.get_ident())
            if schema is not None:
                self.schemas.append(schema)
        if self.delay_s:
            time.sleep(self.delay_s)
        replies = [self._reply(p, model) for p in prompts]
        if schema is None:
            return replies
        return [r if isinstance(r, SubCallFailure) else {"reply": r} for r in replies]

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        return self.rlm_batch([prompt], [context])[0]

    def rlm_batch(self, prompts: Sequence[str], contexts: Sequence[Any] | None = None) -> list[str]:
        ctxs = list(contexts) if contexts is not None else [None] * len(prompts)
        with self._lock:
            self.children += list(zip(prompts, ctxs, strict=True))
        return [f"child:{p}:{type(c).__name__}" for p, c in zip(prompts, ctxs, strict=True)]

    async def allm_query(self, prompt: str, model: str | None = None) -> str:
        return self.llm_query(prompt, model)

    async def allm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        return self.llm_batch(prompts, model)

    async def arlm_query(self, prompt: str, context: Any = None) -> str:
        return self.rlm_query(prompt, context)

    async def arlm_batch(
        self, prompts: Sequence[str], contexts: Sequence[Any] | None = None
    ) -> list[str]:
        return self.rlm_batch(prompts, contexts)


@pytest.fixture
def calls() -> FakeSubCalls:
    return FakeSubCalls()


@pytest.fixture(params=[False, True], ids=["in-host", "worker"])
def env(calls: FakeSubCalls, request: pytest.FixtureRequest) -> Iterator[SqlEnvironment]:
    with SqlEnvironment(calls, SqlEnvironment.Config(worker=request.param)) as environment:
        environment.load_context("\n".join(f"prompt {i}" for i in range(5000)))
        yield environment


def rows(env: SqlEnvironment, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql``: from the connection in the host; from a worker,
    as one JSON object per row through a block."""
    if not env.config.worker:
        return [tuple(r) for r in env.db.engine.conn.sql(sql).fetchall()]  # type: ignore[attr-defined]
    result = env.execute(f"SELECT to_json(t) AS j FROM ({sql}) AS t")
    assert result.error is None, result.error
    return [tuple(json.loads(line).values()) for line in result.output.splitlines()[2:-1]]


def test_llm_fans_out_each_batch_of_rows_in_row_order(
    env: SqlEnvironment, calls: FakeSubCalls
) -> None:
    result = env.execute("CREATE TABLE r AS SELECT line_no, llm(text) AS reply FROM context")
    assert result.error is None and result.output == "OK, 5,000 rows written"
    assert rows(env, "SELECT count(*) FROM r WHERE reply = 'sub:prompt ' || (line_no - 1)") == [
        (5000,)
    ]
    sizes = [len(prompts) for prompts, _ in calls.batches]
    assert sum(sizes) == 5000 and max(sizes) <= 2048 and len(sizes) >= 3
    for prompts, _ in calls.batches:  # each batch is one llm_batch, in row order
        numbers = [int(p.split()[1]) for p in prompts]
        assert numbers == sorted(numbers)


def test_llm_with_limit_calls_only_what_is_asked(env: SqlEnvironment, calls: FakeSubCalls) -> None:
    assert env.execute("SELECT llm(text) FROM context LIMIT 10").error is None
    assert sum(len(p) for p, _ in calls.batches) == 10


def test_null_prompts_give_null_without_a_call(env: SqlEnvironment, calls: FakeSubCalls) -> None:
    got = rows(
        env,
        "SELECT llm(CASE WHEN line_no % 2 = 0 THEN text END) AS r "
        "FROM context WHERE line_no <= 6 ORDER BY line_no",
    )
    assert got == [
        (None,),
        ("sub:prompt 1",),
        (None,),
        ("sub:prompt 3",),
        (None,),
        ("sub:prompt 5",),
    ]
    assert [p for prompts, _ in calls.batches for p in prompts] == [
        "prompt 1",
        "prompt 3",
        "prompt 5",
    ]


def test_non_text_arguments_are_cast_and_model_is_passed(
    env: SqlEnvironment, calls: FakeSubCalls
) -> None:
    got = rows(env, "SELECT llm(42), llm([1, 2]), llm('x', 'big-model'), llm('y', NULL)")
    assert got == [("sub:42", "sub:[1, 2]", "big-model:x", "sub:y")]
    assert (["x"], "big-model") in calls.batches


def test_rows_with_different_models_are_one_batch_each(
    env: SqlEnvironment, calls: FakeSubCalls
) -> None:
    sql = (
        "SELECT llm(text, CASE WHEN line_no % 2 = 0 THEN 'even' END) AS r "
        "FROM context WHERE line_no <= 4 ORDER BY line_no"
    )
    assert rows(env, sql) == [
        ("sub:prompt 0",),
        ("even:prompt 1",),
        ("sub:prompt 2",),
        ("even:prompt 3",),
    ]
    assert sorted(calls.batches, key=str) == [
        (["prompt 0", "prompt 2"], None),
        (["prompt 1", "prompt 3"], "even"),
    ]


def test_typed_rows_are_one_batch_per_schema_and_reply_json(
    env: SqlEnvironment, calls: FakeSubCalls
) -> None:
    sql = (
        'SELECT llm(text, CASE WHEN line_no % 2 = 0 THEN \'{"type": "object"}\' END) AS r '
        "FROM context WHERE line_no <= 4 ORDER BY line_no"
    )
    assert rows(env, sql) == [
        ("sub:prompt 0",),
        ('{"reply": "sub:prompt 1"}',),
        ("sub:prompt 2",),
        ('{"reply": "sub:prompt 3"}',),
    ]
    assert sorted(calls.batches, key=str) == [
        (["prompt 0", "prompt 2"], None),
        (["prompt 1", "prompt 3"], None),
    ]
    assert calls.schemas == [{"type": "object"}]
    failed = env.execute("SELECT llm('fail x', '{}') AS r, llm('y', NULL, '[1]') AS s")
    assert failed.error is None and "2 of 2 calls failed" in failed.output
    assert "refused fail x" in failed.output and "must be a JSON object" in failed.output


def test_failed_rows_give_null_and_a_note(env: SqlEnvironment) -> None:
    sql = (
        "SELECT line_no, llm(CASE WHEN line_no IN (2, 4) THEN 'fail ' || line_no ELSE text END) "
        "AS reply FROM context WHERE line_no <= 5 ORDER BY line_no"
    )
    result = env.execute(sql)
    assert result.error is None
    lines = result.output.splitlines()
    assert "| NULL" in lines[3] and "| NULL" in lines[5] and "sub:prompt 0" in lines[2]
    assert "-- llm(): 2 of 5 calls failed and gave NULL" in result.output
    assert "refused fail 2" in result.output and "refused fail 4" in result.output
    assert env.execute("SELECT llm('ok')").output.count("failed") == 0  # per block


def test_rlm_passes_each_rows_context_as_a_value(env: SqlEnvironment, calls: FakeSubCalls) -> None:
    got = rows(
        env,
        "SELECT rlm('a'), rlm('b', 'some text'), rlm('c', ['d1', 'd2']), rlm('d', {'k': 1}), "
        "rlm(NULL, 'x')",
    )
    assert got == [("child:a:NoneType", "child:b:str", "child:c:list", "child:d:dict", None)]
    assert ("c", ["d1", "d2"]) in calls.children and ("d", {"k": 1}) in calls.children


def test_final_sets_typed_answers(env: SqlEnvironment) -> None:
    for sql, expected in (
        ("SELECT final('42')", "42"),
        ("SELECT final(count(*)) FROM context", 5000),
        ("SELECT final(list(line_no ORDER BY line_no)) FROM context WHERE line_no < 4", [1, 2, 3]),
        ("SELECT final({'n': 1, 's': 'x'})", {"n": 1, "s": "x"}),
        ("SELECT final(1.5)", 1.5),
    ):
        result = env.execute(sql)
        assert result.error is None and result.answer_ready, sql
        assert result.answer == expected, sql
        assert env.read_state().answer == expected


def test_final_over_several_rows_fails_and_sets_nothing(env: SqlEnvironment) -> None:
    for sql in (
        "SELECT final(text) FROM context WHERE line_no <= 3",
        "SELECT final(text) FROM context",  # several batches of rows
    ):
        result = env.execute(sql)
        assert result.error is not None and "exactly one row" in result.error
        assert not result.answer_ready and not env.read_state().answer_ready


def test_final_null_fails_and_no_rows_is_noted(env: SqlEnvironment) -> None:
    result = env.execute("SELECT final(NULL)")
    assert result.error is not None and "final(NULL)" in result.error
    result = env.execute("SELECT final(text) FROM context WHERE false")
    assert result.error is None and not result.answer_ready
    assert "final() did not run" in result.output


def test_final_in_a_failing_statement_sets_nothing(env: SqlEnvironment) -> None:
    assert (
        env.execute("CREATE TABLE pk (a INTEGER PRIMARY KEY); INSERT INTO pk VALUES (1)").error
        is None
    )
    result = env.execute("INSERT INTO pk SELECT 1 WHERE final('no') IS NOT NULL")
    assert result.error is not None and "constraint" in result.error.lower()
    assert not result.answer_ready and env.read_state().answer is None


def test_a_timeout_stops_a_query_waiting_on_sub_calls() -> None:
    slow = FakeSubCalls(delay_s=30.0)
    with SqlEnvironment(slow, SqlEnvironment.Config(exec_timeout_s=1.0)) as env:
        env.load_context("a\nb\nc")
        started = time.perf_counter()
        result = env.execute("CREATE TABLE kept AS SELECT 1 AS k; SELECT llm(text) FROM context")
        took = time.perf_counter() - started
        assert result.timed_out and result.error and "TimeoutError" in result.error
        assert took < 3.0
        after = env.execute("SELECT k + 41 AS v FROM kept")
        assert after.error is None and "42" in after.output.split()
