"""The ``filter-map`` strategy's mechanics on every backend, with scripted
sub-models: which chunks it keeps, how many sub-calls it makes, which reply
it answers with."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from polyrlm.plugins.bench.filter_map import (
    FILTER_CHUNK_CHARS,
    FILTER_KEEP_RATIO,
    FILTER_MAP,
    FILTER_MAX_CALLS,
)
from polyrlm.plugins.bench.methods import RunRecord, run_strategy
from polyrlm.plugins.bench.task import Instance, get_task
from polyrlm.registry import get_registry
from polyrlm.testing.scripted import ScriptedModel
from tests.plugins.bench.oracles import Messages, needle_reader

#: Every backend for the needle; the kernel (seconds to start) is left out of the rest.
ALL_BACKENDS = [
    b
    for b in ("python-inline", "python", "sql", "bash", "wasm")
    if b in get_registry().specs() and get_registry().specs()[b].available
]
BACKENDS = [b for b in ALL_BACKENDS if b != "python"]
_ASK_END = "If the text does not say, reply NONE."


def _run(
    backend: str, instance: Instance, reply: Callable[[str], str]
) -> tuple[RunRecord, list[str]]:
    prompts: list[str] = []

    def sub(messages: Messages) -> str:
        prompt = str(messages[-1]["content"])
        prompts.append(prompt)
        return reply(prompt)

    model = ScriptedModel(sub)
    task = get_task("sniah")
    record = run_strategy(task, instance, FILTER_MAP, backend, sub_model=model.model)
    return record, prompts


def _instance(lines: list[str], question: str, expected: str = "x") -> Instance:
    return Instance(
        task="sniah",
        seed=0,
        size=1_000,
        context="\n".join(lines),
        question=question,
        expected=expected,
        params={"answer_format": "Reply with the word only."},
    )


def _filler(n: int) -> list[str]:
    return [f"Line {i} tells of the quiet old river near the mill." for i in range(n)]


def test_it_is_a_sniah_strategy_with_named_limits() -> None:
    assert get_task("sniah").strategies()["filter-map"] is FILTER_MAP
    assert FILTER_MAP.needs_sub_model
    assert set(FILTER_MAP.code) == {"python", "sql", "bash"}
    assert FILTER_MAP.defaults == {
        "filter_chunk_chars": FILTER_CHUNK_CHARS,
        "filter_max_calls": FILTER_MAX_CALLS,
        "filter_keep_ratio": FILTER_KEEP_RATIO,
    }


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_it_finds_the_needle_with_one_small_sub_call(backend: str) -> None:
    task = get_task("sniah")
    instance = task.generate(3, 100_000)
    record, prompts = _run(backend, instance, lambda p: needle_reader([{"content": p}]))
    assert record.status == "ok", record.detail
    assert record.score == 1.0, (record.answer, record.expected)
    # Only the chunk holding the question's rare words is asked about.
    assert record.sub_calls == len(prompts) == 1
    assert instance.meta["needle"][:-1] in prompts[0]
    assert prompts[0].endswith(_ASK_END) and instance.question in prompts[0]
    chunk = prompts[0].split("\n\nQuestion: ")[0]
    assert len(chunk) <= FILTER_CHUNK_CHARS


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_most_common_reply_wins_and_none_is_ignored(backend: str) -> None:
    lines = _filler(400)
    for at, word in ((50, "alpha"), (150, "beta"), (250, "gamma"), (350, "delta")):
        lines[at] = f"The zebra of line {at} whispers {word}."
    replies = {"alpha": "NONE", "beta": "blue", "gamma": "red", "delta": "red"}

    def reply(prompt: str) -> str:
        word = re.search(r"whispers (\w+)", prompt)
        return replies[word.group(1)] if word else "NONE"

    record, prompts = _run(backend, _instance(lines, "What does the zebra whisper?"), reply)
    assert record.status == "ok", record.detail
    assert record.sub_calls == len(prompts) == 4  # the four chunks with "zebra"
    assert record.answer == "red"


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_go_to_the_first_chunk_and_all_none_answers_none(backend: str) -> None:
    lines = _filler(300)
    lines[40], lines[260] = "A yak hums cobalt.", "A yak hums amber."

    def colour(prompt: str) -> str:
        return re.search(r"hums (\w+)", prompt).group(1)  # type: ignore[union-attr]

    question = "Which colour does the yak hum?"
    record, prompts = _run(backend, _instance(lines, question), colour)
    assert len(prompts) == 2 and record.answer == "cobalt"
    record, _ = _run(backend, _instance(lines, question, "cobalt"), lambda p: " None.\n")
    assert record.status == "ok" and record.answer == "NONE" and record.score == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_sub_calls_are_bounded(backend: str) -> None:
    # "owl" is in 20 of about 50 chunks: every one of them scores the same.
    lines = _filler(1_000)
    for at in range(0, 1_000, 50):
        lines[at] = "An owl sings."
    record, prompts = _run(backend, _instance(lines, "What does the owl sing?"), lambda p: "songs")
    assert record.status == "ok", record.detail
    assert record.sub_calls == len(prompts) == FILTER_MAX_CALLS
    assert record.answer == "songs"
