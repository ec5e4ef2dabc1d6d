"""sql backend end to end: the real loop and broker, with scripted models."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("duckdb")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from pydantic import BaseModel  # noqa: E402

from polyrlm import RLM, StopReason  # noqa: E402
from polyrlm.events import CodeExecuted, RunStarted, ToolCalled  # noqa: E402
from polyrlm.plugins.bench.fanout import FANOUT_CODE  # noqa: E402
from polyrlm.records import Role  # noqa: E402
from polyrlm.testing.scripted import ScriptedModel  # noqa: E402

NEEDLE = "the secret launch code is 7714-ALPHA"


def block(sql: str) -> str:
    return f"```sql\n{sql}\n```"


def test_needle_search_over_a_parquet_file(tmp_path: Path) -> None:
    lines = [f"filler line {i} about nothing" for i in range(20_000)]
    lines[12_345] = NEEDLE
    path = tmp_path / "haystack.parquet"
    pq.write_table(pa.table({"line_no": list(range(1, 20_001)), "text": lines}), path)
    root = ScriptedModel(
        [
            block("SELECT line_no, text FROM context WHERE text LIKE '%launch code%'"),
            block(
                "SELECT final(regexp_extract(text, '\\d{4}-[A-Z]+')) FROM context "
                "WHERE text LIKE '%launch code%'"
            ),
        ]
    )
    result = RLM(root.model, backend="sql").completion("What is the launch code?", path)
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "7714-ALPHA"
    first_observation = root.calls[1][-1]["content"]
    assert "12346 | the secret launch code is 7714-ALPHA" in first_observation
    system = root.calls[0][0]["content"]
    assert "- context (view, 20,000 rows): file haystack.parquet" in system
    assert NEEDLE not in system  # the guide shows the first rows only


def test_partition_map_reduce_with_llm() -> None:
    text = "\n".join(f"entry {i}: nothing" for i in range(3_000))
    text = text.replace("entry 2222: nothing", "entry 2222: date 2024-05-17")
    root = ScriptedModel(
        [
            block(
                "CREATE TABLE chunks AS SELECT chunk, string_agg(text, chr(10) ORDER BY line_no) "
                "AS body FROM (SELECT line_no, text, ntile(6) OVER (ORDER BY line_no) AS chunk "
                "FROM context) GROUP BY chunk;\n"
                "CREATE TABLE found AS SELECT chunk, llm('Dates?' || chr(10) || body) AS reply "
                "FROM chunks;\n"
                "SELECT chunk, reply FROM found ORDER BY chunk"
            ),
            block("SELECT final(string_agg(reply, ',')) FROM found WHERE reply <> 'NONE'"),
        ]
    )

    def sub(messages: list[dict[str, str]]) -> str:
        return "2024-05-17" if "2024-05-17" in messages[-1]["content"] else "NONE"

    sub_model = ScriptedModel(sub)
    result = RLM(root.model, sub_model.model, backend="sql").completion("Which date?", text)
    assert result.answer == "2024-05-17"
    assert result.usage.by_role[Role.SUB].calls == 6
    assert "6 | NONE" in root.calls[1][-1]["content"]


def test_rlm_starts_a_child_with_a_database_of_its_own() -> None:
    def script(messages: list[dict[str, str]]) -> str:
        if "count the lines" in messages[1]["content"]:  # the child, over its own text
            return block("SELECT final(count(*)) FROM context")
        return block(
            "SELECT final(rlm('count the lines', string_agg(text, chr(10) ORDER BY line_no))) "
            "FROM context WHERE line_no <= 7"
        )

    root = ScriptedModel(script)
    sub = ScriptedModel(lambda m: "unused")
    result = RLM(root.model, sub.model, backend="sql", max_depth=2).completion(
        "q", "\n".join(f"l{i}" for i in range(50))
    )
    assert result.answer == "7"  # the child's answer comes back as text
    starts = [e for e in result.trajectory if isinstance(e, RunStarted)]
    assert [s.depth for s in starts] == [0, 1] and all(s.backend == "sql" for s in starts)


def test_errors_and_timeouts_are_fed_back_and_state_is_kept() -> None:
    root = ScriptedModel(
        [
            block("CREATE TABLE notes AS SELECT 'kept' AS v"),
            block("SELECT nope FROM context"),
            block(
                "SELECT count(*) FROM range(1000000000000) AS a CROSS JOIN range(10000) AS b "
                "WHERE (a.range * 7 + b.range) % 1000003 = 17"
            ),
            block("SELECT final(v) FROM notes"),
        ]
    )
    config = {"exec_timeout_s": 0.5, "exec_grace_s": 5.0}
    result = RLM(root.model, backend="sql", backend_config=config).completion("q", "a\nb")
    assert result.answer == "kept"
    assert "Binder Error" in root.calls[2][-1]["content"]
    assert "TimeoutError" in root.calls[3][-1]["content"]
    executed = [e for e in result.trajectory if isinstance(e, CodeExecuted)]
    assert executed[2].timed_out and not executed[2].restarted


def test_the_fanout_benchmark_block_runs() -> None:
    n = 120
    root = ScriptedModel([FANOUT_CODE["sql"].format(n=n, last=n - 1)])
    sub = ScriptedModel(lambda m: "echo: " + m[-1]["content"])
    context = "\n".join(f"prompt {i}" for i in range(n))
    result = RLM(root.model, sub.model, backend="sql", max_concurrency=64).completion("x", context)
    assert str(result.answer) == str(n)
    assert result.usage.by_role[Role.SUB].calls == n


class WordCount(BaseModel):
    line: int
    words: int


def words(text: str) -> int:
    """The number of words in text."""
    return len(text.split())


def test_a_typed_answer_built_from_a_tool_over_the_rows() -> None:
    root = ScriptedModel(
        [
            block(
                "SELECT final(list({'line': line_no, 'words': words(text)} ORDER BY line_no)) "
                "FROM context"
            )
        ]
    )
    result = RLM(root.model, backend="sql", tools=[words]).completion(
        "Words per line?", "a b\nc d e\nf", answer_type=list[WordCount]
    )
    assert result.stop_reason == StopReason.ANSWERED
    counts = [(1, 2), (2, 3), (3, 1)]
    assert result.answer == [WordCount(line=n, words=w) for n, w in counts]
    called = [
        (e.tool, e.arguments, e.result) for e in result.trajectory if isinstance(e, ToolCalled)
    ]
    assert sorted(called, key=str) == [
        ("words", {"text": "a b"}, 2),
        ("words", {"text": "c d e"}, 3),
        ("words", {"text": "f"}, 1),
    ]
    system = root.calls[0][0]["content"]
    assert "`words(text VARCHAR) -> BIGINT`: The number of words in text." in system
    assert "STRUCT(line BIGINT, words BIGINT)[]" in system


def test_a_typed_sub_call_is_checked_on_the_host() -> None:
    schema = '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}'
    root = ScriptedModel(
        [
            block(
                f"CREATE TABLE r AS SELECT line_no, llm('Count: ' || text, '{schema}') AS reply "
                "FROM context;\n"
                "SELECT final(sum(CAST(reply->>'n' AS BIGINT))) FROM r"
            )
        ]
    )
    # The sub-model answers in prose around the JSON; the host takes the JSON out.
    sub = ScriptedModel(lambda m: f'Sure: {{"n": {len(m[-1]["content"].split(chr(10))[0])}}}')
    result = RLM(root.model, sub.model, backend="sql").completion("q", "ab\ncde")
    assert result.stop_reason == StopReason.ANSWERED
    assert result.answer == len("Count: ab") + len("Count: cde")
    assert result.usage.by_role[Role.SUB].calls == 2
