"""sql backend: the user's tools as DuckDB scalar functions, typed answers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

from pydantic import BaseModel

from polyrlm.answers import AnswerType
from polyrlm.backends.sql.environment import SqlEnvironment
from polyrlm.backends.sql.types import duckdb_type, scalar_type
from polyrlm.errors import ConfigError
from polyrlm.testing.contract import ContractPerson, EchoSubCalls, area
from polyrlm.tools import as_tools, tool


class Hit(BaseModel):
    line: int
    word: str


def scale(points: list[int], factor: float = 2.0) -> list[float]:
    """Each point times factor."""
    return [p * factor for p in points]


def find(word: str, limit: int = 3) -> list[Hit]:
    """Where the word is."""
    return [Hit(line=i, word=word) for i in range(limit)]


def shout(text: str, loud: bool = True) -> str:
    return text.upper() if loud else text


def boom(n: int) -> int:
    raise RuntimeError(f"no luck with {n}")


def stamp() -> str:
    return "t0"


def huge() -> int:
    return 2**70


TOOLS = [area, scale, find, shout, boom, stamp, huge]


class CountingSubCalls(EchoSubCalls):
    """Echo sub-calls that record every batch of tool calls, and typed calls."""

    def __init__(self, tools: Sequence[Any] = ()) -> None:
        super().__init__(tools)
        self.batches: list[tuple[str, list[dict[str, Any]]]] = []
        self.typed: list[tuple[list[str], str | None, dict[str, Any] | None]] = []
        self._lock = threading.Lock()

    def call_tools(self, name: str, arguments: Sequence[Mapping[str, Any]]) -> list[Any]:
        with self._lock:
            self.batches.append((name, [dict(a) for a in arguments]))
        return super().call_tools(name, arguments)

    def llm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: dict[str, Any] | None = None
    ) -> list[Any]:
        with self._lock:
            self.typed.append((list(prompts), model, schema))
        return super().llm_batch(prompts, model, schema)


@pytest.fixture(params=[False, True], ids=["in-host", "worker"])
def env(request: pytest.FixtureRequest) -> Iterator[SqlEnvironment]:
    calls = CountingSubCalls(TOOLS)
    with SqlEnvironment(calls, SqlEnvironment.Config(worker=request.param)) as environment:
        environment.load_context("a\nb\nc")
        yield environment


def calls_of(env: SqlEnvironment) -> CountingSubCalls:
    assert isinstance(env.subcalls, CountingSubCalls)
    return env.subcalls


def value(env: SqlEnvironment, sql: str, rest: str = "") -> Any:
    """The answer ``SELECT final(<sql>) <rest>`` sets."""
    result = env.execute(f"SELECT final({sql}) {rest}")
    assert result.error is None and result.answer_ready, result.error
    return result.answer


def test_a_tool_over_many_rows_is_one_batch_request(env: SqlEnvironment) -> None:
    assert value(env, "sum(area(range, 2))", "FROM range(1000)") == 999_000
    assert [(n, len(a)) for n, a in calls_of(env).batches] == [("area", 1000)]
    assert calls_of(env).batches[0][1][:2] == [{"width": 0, "height": 2}, {"width": 1, "height": 2}]


def test_chunks_of_rows_are_one_batch_each(env: SqlEnvironment) -> None:
    assert value(env, "count(area(range, 1))", "FROM range(5000)") == 5000
    sizes = [len(a) for _, a in calls_of(env).batches]
    assert sum(sizes) == 5000 and max(sizes) <= 2048 and len(sizes) >= 3


def test_null_arguments(env: SqlEnvironment) -> None:
    result = env.execute("SELECT area(NULL, 2) AS a, area(3, 4) AS b, shout('hi', NULL) AS c")
    assert result.error is None
    assert result.output.splitlines()[2].split() == ["NULL", "|", "12", "|", "HI"]
    # NULL in a required argument: no call; an optional one NULL: not sent (its default).
    assert calls_of(env).batches == [
        ("area", [{"width": 3, "height": 4}]),
        ("shout", [{"text": "hi"}]),
    ]
    assert value(env, "shout('hi', false)") == "hi"


def test_a_tools_result_is_used_in_further_sql(env: SqlEnvironment) -> None:
    made = env.execute("CREATE TABLE t AS SELECT range AS w, area(range, 3) AS a FROM range(10)")
    assert made.error is None
    assert value(env, "sum(a)", "FROM t WHERE a > w") == 135
    assert value(env, "typeof(area(1, 1))") == "BIGINT"


def test_json_arguments_and_results(env: SqlEnvironment) -> None:
    assert value(env, "scale([1, 2], 0.5)") == [0.5, 1.0]
    assert value(env, "scale('[3]')") == [6.0]  # JSON text; the default factor
    assert value(env, "find('x', 2)->>'$[1].word'") == "x"
    assert value(env, "typeof(find('x'))") == "JSON"
    assert value(env, "CAST(find('y', 1) AS STRUCT(line BIGINT, word VARCHAR)[])[1].line") == 0


def test_a_tool_without_arguments_is_called_once_per_row(env: SqlEnvironment) -> None:
    assert value(env, "string_agg(stamp(), ',')", "FROM range(3)") == "t0,t0,t0"
    assert calls_of(env).batches == [("stamp", [{}, {}, {}])]


def test_a_wrong_argument_type_names_the_tool_and_its_arguments(env: SqlEnvironment) -> None:
    result = env.execute("SELECT area(1.5, 2)")
    assert result.error is not None and "area(width BIGINT, height BIGINT)" in result.error
    assert calls_of(env).batches == []
    # Checked on the host: the error names the tool and the argument.
    result = env.execute("SELECT scale(['a'])")
    assert result.error is not None and "scale" in result.error and "points" in result.error
    result = env.execute("SELECT scale('not json')")
    assert result.error is not None and "scale(): argument points must be JSON" in result.error
    assert not result.restarted and env.execute("SELECT 1").error is None


def test_a_failing_tool_fails_the_statement_and_the_block_goes_on(env: SqlEnvironment) -> None:
    result = env.execute("CREATE TABLE kept AS SELECT 1 AS k; SELECT boom(k) FROM kept")
    assert result.error is not None and "no luck with 1" in result.error and "boom" in result.error
    assert not result.restarted and not result.answer_ready
    assert value(env, "k + 41", "FROM kept") == 42


def test_limits_fail_the_statement_clearly(env: SqlEnvironment) -> None:
    result = env.execute("SELECT shout(repeat('x', 1100000))")
    assert result.error is not None and "shout(): argument text is 1,100,000 bytes" in result.error
    assert calls_of(env).batches == []
    result = env.execute("SELECT huge()")
    assert (
        result.error is not None and "huge() returned a value that is not a BIGINT" in result.error
    )


def test_typed_llm_calls(env: SqlEnvironment) -> None:
    schema = '{"type": "object"}'
    got = value(env, f"json_extract_string(llm('ping', '{schema}'), '$.echo')")
    assert got == "re:ping"
    assert value(env, f"llm('p', 'big', '{schema}')->>'echo'") == "re:p"
    assert value(env, "llm('s', {'type': 'object'})->>'echo'") == "re:s"  # a STRUCT schema
    assert value(env, "llm('plain', 'big')") == "re:plain"  # a model name stays a model name
    assert calls_of(env).typed == [
        (["ping"], None, {"type": "object"}),
        (["p"], "big", {"type": "object"}),
        (["s"], None, {"type": "object"}),
        (["plain"], "big", None),
    ]
    result = env.execute("SELECT llm('q', '{not json') AS r")
    assert result.error is None and "NULL" in result.output
    assert "the schema is not JSON" in result.output


def test_a_typed_answer_as_json_text(env: SqlEnvironment) -> None:
    text = '{"name": "Ada", "tags": ["x"], "address": {"city": "Paris"}}'
    answer = value(env, f"'{text}'")
    person = AnswerType(ContractPerson).validate(answer)
    assert person.address.city == "Paris"
    assert value(env, f"'{text}'::JSON") == json.loads(text)  # JSON stays JSON data


@pytest.mark.parametrize("worker", [False, True], ids=["in-host", "worker"])
@pytest.mark.parametrize(
    ("names", "why"),
    [
        (["now"], "the name of a DuckDB function"),
        (["sum"], "the name of a DuckDB function"),
        (["order"], "an SQL keyword"),
        (["Twice", "twice"], "the name of another tool"),
    ],
)
def test_a_tool_named_like_a_duckdb_function_stops_the_start(
    worker: bool, names: list[str], why: str
) -> None:
    tools = [tool(stamp, name=name) for name in names]
    with pytest.raises(ConfigError) as caught:
        SqlEnvironment(EchoSubCalls(tools), SqlEnvironment.Config(worker=worker))
    assert f"tool {names[-1]!r} cannot be an SQL function" in str(caught.value)
    assert why in str(caught.value)


def test_the_guides_show_duckdb_types() -> None:
    with SqlEnvironment(EchoSubCalls(), SqlEnvironment.Config(worker=False)) as env:
        guide = env.answer_guide(AnswerType(ContractPerson))
        tools = env.tools_guide(as_tools(TOOLS))
    assert "STRUCT(name VARCHAR, tags VARCHAR[], address STRUCT(city VARCHAR))" in guide
    assert "SELECT final({'name': ..., 'tags': [...], 'address': {'city': ...}})" in guide
    assert (
        "`area(width BIGINT, height BIGINT) -> BIGINT`: The area of a width by height rectangle."
        in tools
    )
    assert "`scale(points JSON, factor DOUBLE := 2.0) -> JSON`" in tools
    assert 'JSON of points: {"items":{"type":"integer"},"type":"array"}' in tools
    assert "`stamp() -> VARCHAR`" in tools


def test_schemas_as_duckdb_types() -> None:
    assert scalar_type({"anyOf": [{"type": "integer"}, {"type": "null"}]}) == "BIGINT"
    assert scalar_type({"enum": ["a", "b"]}) == "VARCHAR"
    assert scalar_type({"type": "array"}) is None
    assert duckdb_type(AnswerType(list[Hit]).schema) == "STRUCT(line BIGINT, word VARCHAR)[]"
    assert duckdb_type(AnswerType(dict[str, float]).schema) == "MAP(VARCHAR, DOUBLE)"
    assert duckdb_type({"type": "object"}) == "JSON"
    recursive = {
        "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
        "$ref": "#/$defs/N",
    }
    assert duckdb_type(recursive) == "STRUCT(next JSON)"
