"""``polyrlm export``: real runs on every backend (a scripted root, logged with
``RLM(log=...)``) exported as SFT and RL records. Each SFT record must be,
message by message, what the root model was sent at that turn plus its reply;
the filters, children, sub-calls and scores are checked on real records too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from polyrlm import RLM, Budget
from polyrlm.cli import main as cli_main
from polyrlm.errors import ConfigError
from polyrlm.events import ModelCalled, RunStarted
from polyrlm.plugins.bench.task import get_task
from polyrlm.plugins.export import (
    ExportStats,
    TaskScorer,
    load_scores,
    read_runs,
    rl_records,
    sft_records,
    write_jsonl,
)
from polyrlm.prompts import FALLBACK_PROMPT
from polyrlm.provider import message_text
from polyrlm.records import Role
from polyrlm.registry import get_registry
from polyrlm.result import Result
from polyrlm.testing.fake_server import FakeOpenAIServer, FakeReply, FakeToolCall
from polyrlm.testing.scripted import ScriptedModel
from polyrlm.trajectory import read_trajectory

BACKENDS = ["python-inline", "python", "sql", "bash", "wasm"]
QUESTION = "What is the answer?"
CONTEXT = "alpha beta gamma\ndelta epsilon"
#: The sub-model's reply to every prompt.
PONG = "pong"


def plain(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as sent, with content parts (cache marks) turned into their text."""
    out = []
    for message in messages:
        copy = {k: v for k, v in message.items() if v is not None}
        copy["content"] = message_text(message)
        out.append(copy)
    return out


@dataclass
class Recorded:
    backend: str
    path: Path
    root: ScriptedModel
    replies: list[str]
    result: Result

    @property
    def run_id(self) -> str:
        return self.result.trajectory[0].run_id


def script(backend: str) -> list[str]:
    """Three root turns in the backend's language: a sub-call printed (prose
    before the block), a variable set, the answer set."""
    cls = get_registry().get(backend)
    snippets, tag = cls.contract, cls.fence_tags[0]
    return [
        f"Let me ask the sub-model.\n```{tag}\n{snippets.llm_query}\n```",
        f"```{tag}\n{snippets.set_var}\n```",
        f"Done.\n```{tag}\n{snippets.set_answer}\n```",
    ]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Recorded]:
    """One real run per backend, each trajectory in one folder (as RLM.batch's log_dir)."""
    folder = tmp_path_factory.mktemp("runs")
    sub = ScriptedModel(lambda messages: PONG)
    out = {}
    for backend in BACKENDS:
        replies = script(backend)
        root = ScriptedModel(replies)
        path = folder / f"{backend}.jsonl"
        result = RLM(root.model, sub.model, backend=backend, log=path).completion(QUESTION, CONTEXT)
        assert str(result.answer) == "42" and len(root.calls) == 3, (backend, result.error)
        out[backend] = Recorded(backend, path, root, replies, result)
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_sft_records_are_what_the_root_was_sent_turn_by_turn(
    backend: str, recorded: dict[str, Recorded]
) -> None:
    run = recorded[backend]
    records = sft_records(run.path)
    assert len(records) == len(run.root.calls) == 3
    for record, sent, reply in zip(records, run.root.calls, run.replies, strict=True):
        assert record.messages[:-1] == plain(sent)
        assert record.messages[-1] == {"role": "assistant", "content": reply}
        assert record.tools is None
    first = records[0].messages
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert QUESTION in first[1]["content"] and PONG in records[1].messages[3]["content"]
    line = json.loads(records[2].line())
    assert list(line) == ["messages"] and line["messages"] == records[2].messages


@pytest.mark.parametrize("backend", BACKENDS)
def test_rl_record_is_the_whole_run_with_its_score(
    backend: str, recorded: dict[str, Recorded]
) -> None:
    run = recorded[backend]
    [record] = rl_records(run.path, scores={run.run_id: 0.75})
    assert record.prompt == plain(run.root.calls[0])  # system and question
    whole = [*plain(run.root.calls[-1]), {"role": "assistant", "content": run.replies[-1]}]
    assert record.prompt + record.completion == whole
    assert [m["role"] for m in record.completion] == ["assistant", "user"] * 2 + ["assistant"]
    assert (record.reward, record.stop_reason, str(record.answer)) == (0.75, "answered", "42")
    assert (record.kind, record.run_id, record.depth, record.turns) == ("run", run.run_id, 0, 3)
    assert record.complete and record.end is None and record.backend == backend
    assert record.source == str(run.path)


def test_a_folder_of_runs_exports_every_backend_in_name_order(
    recorded: dict[str, Recorded],
) -> None:
    folder = recorded["sql"].path.parent
    stats = ExportStats()
    records = rl_records(folder, stats=stats)
    names = sorted(f"{b}.jsonl" for b in BACKENDS)  # python-inline.jsonl before python.jsonl
    assert [f"{r.backend}.jsonl" for r in records] == names
    assert (stats.files, stats.runs, stats.records) == (5, 5, 5)
    assert all(r.reward is None for r in records)  # no scores given
    assert len(sft_records(folder)) == 15


def test_native_tool_calls_become_tool_messages_as_sent(tmp_path: Path) -> None:
    """Two run_code calls in one reply (the first one's result is not a prompt
    in the record: it is rebuilt), a call to a tool that does not exist, then the answer."""
    replies = [
        FakeReply(
            "Two blocks.",
            (
                FakeToolCall("run_code", {"code": "print(len(context))"}),
                FakeToolCall("run_code", {"code": "x = 2\nprint(x)"}),
            ),
        ),
        FakeReply("", (FakeToolCall("nope", {}),)),
        FakeReply("", (FakeToolCall("run_code", {"code": "FINAL(x)"}),)),
    ]
    turns = iter(replies)
    log = tmp_path / "tools.jsonl"
    with FakeOpenAIServer(lambda body: next(turns)) as server:
        rlm = RLM(
            "openai/served-model",
            backend="python-inline",
            code_channel="tools",
            api_base=server.base_url,
            log=log,
        )
        result = rlm.completion(QUESTION, CONTEXT)
        served = server.wait_for_calls(3)
    assert result.answer == 2
    records = sft_records(log)
    assert len(records) == 3
    final = [m for m in read_trajectory(log) if isinstance(m, ModelCalled)][-1]
    for index, (record, call) in enumerate(zip(records, served, strict=True)):
        assert record.messages[:-1] == plain(call.messages), index
        assert record.tools == call.body["tools"]
        reply = record.messages[-1]
        assert reply["role"] == "assistant" and reply["tool_calls"][0]["type"] == "function"
    tool_results = [m for m in records[1].messages if m["role"] == "tool"]
    assert [m["content"] for m in tool_results] == [f"{len(CONTEXT)}\n", "2\n"]
    assert final.tool_calls is not None
    assert records[2].messages[-1]["tool_calls"][0]["id"] == final.tool_calls[0]["id"]
    assert json.loads(records[0].line())["tools"][0]["function"]["name"] == "run_code"


def test_a_rejected_typed_answer_in_a_tool_result_is_rebuilt(tmp_path: Path) -> None:
    """The first of two run_code calls sets an answer that does not validate:
    its result (not recorded as a prompt) carries the errors the model was told."""
    replies = [
        FakeReply(
            "",
            (
                FakeToolCall("run_code", {"code": "FINAL('not a number')"}),
                FakeToolCall("run_code", {"code": "print(7)"}),
            ),
        ),
        FakeReply("", (FakeToolCall("run_code", {"code": "FINAL(7)"}),)),
    ]
    turns = iter(replies)
    log = tmp_path / "typed.jsonl"
    with FakeOpenAIServer(lambda body: next(turns)) as server:
        rlm = RLM(
            "openai/served-model",
            backend="python-inline",
            code_channel="tools",
            answer_type=int,
            api_base=server.base_url,
            log=log,
        )
        assert rlm.completion(QUESTION, CONTEXT).answer == 7
        served = server.wait_for_calls(2)
    records = sft_records(log)
    assert [r.messages[:-1] for r in records] == [plain(c.messages) for c in served]
    assert "does not validate" in records[1].messages[3]["content"]


def _tree(path: Path) -> tuple[ScriptedModel, ScriptedModel, Result]:
    root = ScriptedModel(
        [
            "```python\nprint(llm_query('ping'))\n"
            "kid = rlm_query('child task', context='abc')\n```",
            "```python\nFINAL(kid)\n```",
        ]
    )
    child = ScriptedModel(["```python\nFINAL(context.upper())\n```"])
    sub = ScriptedModel(lambda messages: PONG)
    rlm = RLM(root.model, sub.model, child_model=child.model, max_depth=2, log=path)
    result = rlm.completion(QUESTION, "ctx")
    assert result.answer == "ABC"
    return root, child, result


def test_children_and_sub_calls_only_by_option(tmp_path: Path) -> None:
    log = tmp_path / "tree.jsonl"
    root, child, result = _tree(log)
    starts = [e for e in result.trajectory if isinstance(e, RunStarted)]
    root_id, child_id = (s.run_id for s in starts)
    assert [len(r.messages) for r in sft_records(log)] == [3, 5]  # the root's two turns

    with_children = sft_records(log, children=True)
    assert len(with_children) == 3
    assert with_children[2].messages[:-1] == plain(child.calls[0])
    assert "child task" in with_children[2].messages[1]["content"]

    with_subs = sft_records(log, sub_calls=True)
    assert [r.messages for r in with_subs[2:]] == [
        [{"role": "user", "content": "ping"}, {"role": "assistant", "content": PONG}]
    ]
    assert len(sft_records(log, children=True, sub_calls=True)) == 4

    assert [r.run_id for r in rl_records(log)] == [root_id]
    rl = rl_records(log, children=True, sub_calls=True, scores={log.name: 1.0})
    assert [(r.kind, r.run_id, r.parent_run_id, r.reward) for r in rl] == [
        ("run", root_id, None, 1.0),
        ("sub_call", root_id, None, None),
        ("run", child_id, root_id, None),  # a file's score is its root's
    ]
    assert rl[2].prompt + rl[2].completion == [
        *plain(child.calls[0]),
        {"role": "assistant", "content": "```python\nFINAL(context.upper())\n```"},
    ]
    assert rl[1].prompt == [{"role": "user", "content": "ping"}] and rl[1].depth == 1
    assert len(root.calls) == 2


def test_a_typed_sub_call_asked_again_is_not_a_record_of_its_own(tmp_path: Path) -> None:
    """The second attempt's prompt is only the first reply's errors: no record."""
    log = tmp_path / "typed-sub.jsonl"
    root = ScriptedModel(
        [
            "```python\nprint(llm_query('ping', schema={'type': 'object'}))\n```",
            "```python\nFINAL('ok')\n```",
        ]
    )
    sub = ScriptedModel(["[1]", '{"echo": 1}'])  # an array first: it does not validate
    RLM(root.model, sub.model, log=log).completion(QUESTION, "x")
    assert len(sub.calls) == 2
    stats = ExportStats()
    records = sft_records(log, sub_calls=True, stats=stats)
    assert [r.messages for r in records[2:]] == [
        [
            {"role": "user", "content": message_text(sub.calls[0][0])},
            {"role": "assistant", "content": "[1]"},
        ]
    ]
    assert stats.skipped == {"typed sub-calls asked again (their prompt is only the errors)": 1}


def test_max_input_chars_drops_long_turns(recorded: dict[str, Recorded]) -> None:
    run = recorded["python-inline"]
    sizes = [sum(len(m["content"]) for m in plain(sent)) for sent in run.root.calls]
    assert sizes[0] < sizes[1] < sizes[2]
    stats = ExportStats()
    kept = sft_records(run.path, max_input_chars=sizes[1], stats=stats)
    assert [r.messages[:-1] for r in kept] == [plain(s) for s in run.root.calls[:2]]
    assert stats.skipped == {f"turns whose input exceeds {sizes[1]:,} characters": 1}
    assert sft_records(run.path, max_input_chars=sizes[0] - 1) == []
    with pytest.raises(ConfigError, match="max-input-chars"):
        sft_records(run.path, max_input_chars=0)


def test_min_score_keeps_runs_that_scored_enough(
    recorded: dict[str, Recorded], tmp_path: Path
) -> None:
    folder = recorded["sql"].path.parent
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"sql.jsonl": 1.0, recorded["bash"].run_id: 0.0}))
    rewards = {r.backend: r.reward for r in rl_records(folder, scores=scores)}
    assert rewards == {"bash": 0.0, "python": None, "python-inline": None, "sql": 1.0, "wasm": None}
    stats = ExportStats()
    kept = sft_records(folder, scores=scores, min_score=0.5, stats=stats)
    assert [r.messages[:-1] for r in kept] == [plain(s) for s in recorded["sql"].root.calls]
    assert stats.skipped == {"runs with no score": 3, "runs scoring below 0.5": 1}
    assert len(sft_records(folder, scores=scores, min_score=0.0)) == 6  # at least: inclusive
    with pytest.raises(ConfigError, match="needs scores"):
        sft_records(folder, min_score=0.5)


def test_scores_from_rows_and_from_a_bench_file(
    recorded: dict[str, Recorded], tmp_path: Path
) -> None:
    sql, wasm = recorded["sql"], recorded["wasm"]
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"run_id": sql.run_id, "score": 0.25})
        + "\n\n"
        + json.dumps({"trajectory": str(wasm.path), "score": 0.5})
        + "\n"
    )
    bench = tmp_path / "sniah.json"  # the shape of `polyrlm bench`'s JSON, rows naming runs
    bench.write_text(
        json.dumps({"benchmark": "sniah", "rows": [], "runs": [{"run_id": sql.run_id, "score": 1}]})
    )
    for source, expected in ((rows, {"sql": 0.25, "wasm": 0.5}), (bench, {"sql": 1.0})):
        got = {r.backend: r.reward for r in rl_records([sql.path, wasm.path], scores=source)}
        assert got == {"sql": None, "wasm": None, **expected}
    bad = tmp_path / "bad.json"
    for text, error in (
        ('{"a.jsonl": "high"}', "finite number"),
        ('[{"score": 1}]', "names its run"),
        ("[1, 2]", "an object with a score"),
        ("{nope", "not JSON"),
        ('[{"run_id": "x", "score": 1}, {"run_id": "x", "score": 0}]', "two different"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=error):
            load_scores(bad)
    with pytest.raises(ConfigError, match="not a file"):
        load_scores(tmp_path)


def test_a_file_name_naming_two_inputs_is_refused(
    recorded: dict[str, Recorded], tmp_path: Path
) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.jsonl").write_bytes(recorded["sql"].path.read_bytes())
    with pytest.raises(ConfigError, match="more than one trajectory"):
        rl_records([tmp_path / "a", tmp_path / "b"], scores={"run.jsonl": 1.0})
    got = rl_records([tmp_path / "a", tmp_path / "b"], scores={str(tmp_path / "a/run.jsonl"): 1.0})
    assert [r.reward for r in got] == [1.0, None]


def test_rewards_from_a_benchmark_scorer(recorded: dict[str, Recorded], tmp_path: Path) -> None:
    paths = [recorded[b].path for b in BACKENDS]
    right = rl_records(paths, scores=TaskScorer("sniah", expected="42"))
    assert [r.reward for r in right] == [1.0] * 5  # RULER's string match on "42"
    assert [r.reward for r in rl_records(paths, scores=TaskScorer("sniah", expected=43))] == [
        0.0
    ] * 5
    task = get_task("sniah")
    instance = task.generate(0, task.min_size)
    log = tmp_path / "sniah.jsonl"
    root = ScriptedModel([f"```python\nFINAL({instance.expected!r})\n```"])
    RLM(root.model, log=log).completion(instance.question, instance.context)
    scorer = TaskScorer("sniah", instance=(0, task.min_size))
    assert [r.reward for r in rl_records(log, scores=scorer)] == [1.0]
    with pytest.raises(ConfigError, match="did not ask the question"):
        rl_records(paths[0], scores=scorer)
    with pytest.raises(ConfigError, match="unknown benchmark task"):
        TaskScorer("nope", expected="x")


def test_runs_without_an_answer_only_with_include_failed(tmp_path: Path) -> None:
    log = tmp_path / "failed.jsonl"
    replies = ["```python\nprint(1)\n```", "```python\nprint(2)\n```"]
    root = ScriptedModel(replies)
    result = RLM(root.model, budget=Budget(max_iterations=1), log=log).completion(QUESTION, "x")
    assert result.stop_reason == "max_iterations" and result.answer is None
    stats = ExportStats()
    assert sft_records(log, stats=stats) == [] and rl_records(log) == []
    assert stats.skipped == {"runs without an answer (--include-failed-runs keeps them)": 1}
    records = sft_records(log, include_failed=True)
    assert [r.messages[:-1] for r in records] == [plain(s) for s in root.calls]
    assert records[1].messages[-2]["content"].endswith(FALLBACK_PROMPT)  # as it was sent
    [rl] = rl_records(log, include_failed=True, scores=TaskScorer("sniah", expected="1"))
    assert (rl.reward, rl.stop_reason, rl.turns, rl.complete) == (0.0, "max_iterations", 2, True)


def test_a_failed_root_call_ends_the_conversation(tmp_path: Path) -> None:
    log = tmp_path / "failed-call.jsonl"
    root = ScriptedModel(["```python\nprint(1)\n```"])  # no reply left for turn 2: it fails
    result = RLM(root.model, log=log).completion(QUESTION, "x")
    assert result.stop_reason == "error" and len(root.calls) == 2
    records = sft_records(log, include_failed=True)
    assert [r.messages[:-1] for r in records] == [plain(root.calls[0])]
    [rl] = rl_records(log, include_failed=True)
    assert (rl.turns, rl.complete, rl.end) == (1, True, "the root call of turn 2 failed")


def test_a_record_that_ends_early_is_exported_as_far_as_its_turns_are_whole(
    recorded: dict[str, Recorded], tmp_path: Path
) -> None:
    run = recorded["python-inline"]
    lines = run.path.read_bytes().splitlines(keepends=True)
    roots = [
        i
        for i, line in enumerate(lines)
        if json.loads(line).get("event") == "model_called" and json.loads(line)["role"] == "root"
    ]
    killed = tmp_path / "killed.jsonl"
    cut = lines[roots[1] + 1]  # the run was killed while writing the line after turn 2's reply
    killed.write_bytes(b"".join(lines[: roots[1] + 1]) + cut[: len(cut) // 2])
    stats = ExportStats()
    assert sft_records(killed, stats=stats) == []  # no answer: not by default
    assert stats.notes == [
        f"{killed}: the record ends at line {roots[1] + 1} (the run did not finish)",
        f"{killed}: line {roots[1] + 2} is incomplete; ignored",
    ]
    records = sft_records(killed, include_failed=True)
    assert [r.messages[:-1] for r in records] == [plain(s) for s in run.root.calls[:2]]
    assert records[1].messages[-1] == {"role": "assistant", "content": run.replies[1]}
    [rl] = rl_records(killed, include_failed=True, scores=TaskScorer("sniah", expected="42"))
    assert (rl.reward, rl.stop_reason, rl.turns, rl.complete) == (None, None, 2, False)
    assert rl.end == "the record ends early (the run did not finish)"


def test_a_compacted_turn_ends_the_conversation(tmp_path: Path) -> None:
    """The window forces the loop to compact turn 3's history: what the model
    saw is not the history any more, so the records stop before that turn."""
    log = tmp_path / "compacted.jsonl"
    replies = [
        "```python\nprint('word ' * 400)\n```",
        "```python\nprint('more ' * 400)\n```",
        "```python\nFINAL('done')\n```",
    ]
    root = ScriptedModel(replies)
    result = RLM(
        root.model, windows={root.model: 2_000}, log=log, prompt_profile="full"
    ).completion(QUESTION, "x")
    assert result.answer == "done"
    assert "Turns compacted" in message_text(root.calls[2][-1])
    records = sft_records(log)
    assert [r.messages[:-1] for r in records] == [plain(s) for s in root.calls[:2]]
    [rl] = rl_records(log)
    assert not rl.complete and rl.turns == 2 and "compacted" in (rl.end or "")


def test_the_command_writes_what_the_api_does(
    recorded: dict[str, Recorded], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = recorded["sql"].path.parent
    flags = ["--max-input-chars", "100000", "--sub-calls", "--weight-last"]
    out, again = tmp_path / "sft.jsonl", tmp_path / "again.jsonl"
    assert cli_main(["export", "sft", str(folder), "-o", str(out), *flags]) == 0
    assert cli_main(["export", "sft", str(folder), "-o", str(again), *flags]) == 0
    api = tmp_path / "api.jsonl"
    written = write_jsonl(
        sft_records(folder, max_input_chars=100_000, sub_calls=True, weight_last=True), api
    )
    assert out.read_bytes() == again.read_bytes() == api.read_bytes()  # deterministic
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == len(lines) == 15 + 5  # three turns and one sub-call per backend
    weights = [[m.get("weight") for m in r["messages"] if m["role"] == "assistant"] for r in lines]
    assert weights[2] == [0, 0, None]  # only the turn's own reply is learnt
    err = capsys.readouterr().err
    assert f"wrote {written} sft records to {out}" in err

    assert (
        cli_main(["export", "rl", str(folder), "--reward-task", "sniah", "--expected", "42"]) == 0
    )
    shown = capsys.readouterr().out
    scorer = TaskScorer("sniah", expected=42)
    assert shown == "".join(r.line() + "\n" for r in rl_records(folder, scores=scorer))
    assert [json.loads(line)["reward"] for line in shown.splitlines()] == [1.0] * 5


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["sft", "missing.jsonl"], "no such file"),
        (["sft", "RUN", "--min-score", "0.5"], "needs scores"),
        (["rl", "RUN", "--scores", "S", "--reward-task", "sniah"], "not both"),
        (["rl", "RUN", "--reward-task", "sniah"], "needs --expected"),
        (["rl", "RUN", "--expected", "1"], "go with --reward-task"),
        (["rl", "RUN", "--reward-task", "sniah", "--reward-instance", "x"], "SEED:SIZE"),
        (["sft", "RUN", "-o", "RUN"], "is (or would join) the input"),
        (["sft", "NOTRUN"], "is not a trajectory"),
        (["sft", "RUN", "--max-input-chars", "0"], "at least 1"),
    ],
)
def test_bad_input_is_exit_status_2(
    args: list[str],
    error: str,
    recorded: dict[str, Recorded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "S").write_text("{}")
    (tmp_path / "NOTRUN").write_text('{"hello": 1}\n')
    paths = {"RUN": str(recorded["sql"].path), "S": str(tmp_path / "S")}
    paths["NOTRUN"] = str(tmp_path / "NOTRUN")
    argv = ["export", *(paths.get(a, a) for a in args)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("polyrlm: error: ") and error in err, err


def test_read_runs_keeps_each_run_of_a_tree(tmp_path: Path) -> None:
    log = tmp_path / "tree.jsonl"
    _tree(log)
    runs = read_runs(log)
    assert [(r.depth, len(r.replies), r.answered) for r in runs] == [(0, 2, True), (1, 1, True)]
    assert runs[1].root_id == runs[0].run_id == runs[1].parent_run_id
    assert [c.role for c in runs[0].sub_calls] == [Role.SUB]
