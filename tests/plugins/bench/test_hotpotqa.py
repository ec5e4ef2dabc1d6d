"""``hotpotqa``: HotpotQA's official answer metrics by hand, the generator
against the raw file, the pinned-file check, and the strategies through the
real loop on every fast backend (an oracle sub-model for ``retrieve-read``)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.hotpotqa import FILL_SLACK_CHARS, HotpotqaTask
from polyrlm.plugins.bench.hotpotqa_data import RULER_INSTRUCTION, hotpotqa_data
from polyrlm.plugins.bench.hotpotqa_strategies import STOP_WORDS, TOP_K_DOCUMENTS
from polyrlm.plugins.bench.methods import run_strategy
from polyrlm.plugins.bench.packaged import HOTPOTQA, packaged_path
from polyrlm.plugins.bench.scoring import hotpot_em, hotpot_f1, normalize_answer
from polyrlm.plugins.bench.task import Instance, get_task
from polyrlm.registry import get_registry
from polyrlm.testing.scripted import ScriptedModel

#: The fast backends installed here (the kernel backend runs the same python code).
BACKENDS = [
    b
    for b in ("python-inline", "sql", "bash", "wasm")
    if b in get_registry().specs() and get_registry().specs()[b].available
]
#: A small context: about 50 documents.
SMALL = 8_000
Messages = list[dict[str, Any]]


@pytest.fixture(scope="module")
def raw() -> dict[str, dict[str, Any]]:
    """The file's questions by id, read straight from the JSON."""
    items = json.loads(packaged_path(HOTPOTQA).read_text(encoding="utf-8"))
    return {item["_id"]: item for item in items}


@pytest.fixture(scope="module")
def owners(raw: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """Paragraph text (RULER's ``title\\ntext``) -> ids of the questions that have it."""
    out: dict[str, set[str]] = {}
    for qid, item in raw.items():
        for title, sentences in item["context"]:
            out.setdefault(f"{title}\n{''.join(sentences)}", set()).add(qid)
    return out


# --- scoring (values worked out by hand from hotpot_evaluate_v1.py)


@pytest.mark.parametrize(
    ("raw_answer", "normal"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  A  cat, an\tapple ", "cat apple"),
        ("Theatre of the Absurd", "theatre of absurd"),  # articles only as words
        ("Jean-Paul Sartre", "jeanpaul sartre"),  # punctuation removed, not split on
        (None, ""),
        (True, "yes"),
        (["Paris", "France"], "paris france"),
        (1994, "1994"),
    ],
)
def test_normalize_answer(raw_answer: object, normal: str) -> None:
    assert normalize_answer(raw_answer) == normal


@pytest.mark.parametrize(
    ("predicted", "gold", "f1", "em"),
    [
        ("the Eiffel Tower", "Eiffel tower", 1.0, 1.0),
        ("Paris France", "Paris", 2 * (1 / 2 * 1) / (1 / 2 + 1), 0.0),  # p 1/2, r 1
        ("Barack Obama Jr.", "Barack Obama", 2 * (2 / 3 * 1) / (2 / 3 + 1), 0.0),  # 0.8
        ("new new york", "New York", 0.8, 0.0),  # "new" counts once: p 2/3, r 1
        ("yes", "no", 0.0, 0.0),
        ("Yes.", "yes", 1.0, 1.0),
        ("yes it is", "yes", 0.0, 0.0),  # gold yes/no and they differ: no partial credit
        ("no answer", "noanswer", 0.0, 0.0),  # two tokens vs one: nothing shared
        ("", "Paris", 0.0, 0.0),
        (None, "Paris", 0.0, 0.0),
        (["Paris", "France"], "Paris, France", 1.0, 1.0),  # a list: items joined
        (False, "no", 1.0, 1.0),
        ("1,000", "1000", 1.0, 1.0),
    ],
)
def test_hotpot_f1_and_em_hand_values(predicted: object, gold: str, f1: float, em: float) -> None:
    assert hotpot_f1(predicted, gold) == pytest.approx(f1)
    assert hotpot_em(predicted, gold) == em


def test_the_task_reports_f1_and_em() -> None:
    task = get_task("hotpotqa")
    instance = task.generate(0, SMALL)
    assert task.metric == "F1 (HotpotQA)"
    gold = instance.expected
    assert task.scores(instance, gold) == {"f1": 1.0, "em": 1.0}
    assert task.scores(instance, f"{gold} indeed") == {
        "f1": pytest.approx(hotpot_f1(f"{gold} indeed", gold)),
        "em": 0.0,
    }
    assert task.score(instance, None) == 0.0


# --- the generator


def test_generation_is_deterministic() -> None:
    task = get_task("hotpotqa")
    first, again = task.generate(5, SMALL), task.generate(5, SMALL)
    assert first == again
    others = {task.generate(seed, SMALL).meta["hotpotqa_id"] for seed in range(6)}
    assert len(others) > 1


@pytest.mark.parametrize("size", [HotpotqaTask.min_size, 8_192, 131_072, 1_048_576])
def test_size_is_within_a_paragraph_of_the_target(size: int) -> None:
    instance = get_task("hotpotqa").generate(1, size)
    target = size * CHARS_PER_TOKEN
    assert target - FILL_SLACK_CHARS <= instance.chars <= target
    assert instance.meta["documents"] == len(instance.context)


def test_the_file_holds_the_largest_size() -> None:
    data = hotpotqa_data()
    assert (len(data.questions), len(data.paragraphs)) == (7_405, 66_635)
    headers = sum(len(f"Document {n}:\n") for n in range(1, len(data.paragraphs) + 1))
    # Every question gives up at most its own ten titles' paragraphs: keep a margin for them.
    spare = (data.pool_chars + headers) // CHARS_PER_TOKEN - HotpotqaTask.max_size
    assert spare > 100_000


@pytest.mark.parametrize(("seed", "size"), [(0, 4_000), (1, SMALL), (2, 131_072)])
def test_gold_paragraphs_sit_at_the_recorded_indices_among_other_questions_paragraphs(
    seed: int, size: int, raw: dict[str, dict[str, Any]], owners: dict[str, set[str]]
) -> None:
    instance = get_task("hotpotqa").generate(seed, size)
    item = raw[instance.meta["hotpotqa_id"]]
    assert instance.expected == item["answer"]
    assert instance.params["query"] == item["question"]
    assert instance.question == f"{RULER_INSTRUCTION}\n\nQuestion: {item['question']}"
    paragraphs = []
    for n, doc in enumerate(documents(instance), 1):
        header, title, text = doc.split("\n", 2)
        assert header == f"Document {n}:"  # RULER's template, numbered in order
        paragraphs.append(f"{title}\n{text}")
    own = {f"{t}\n{''.join(s)}": t for t, s in item["context"]}
    gold_titles = {t for t, _ in item["supporting_facts"]}
    gold = [i for i, p in enumerate(paragraphs) if p in own and own[p] in gold_titles]
    assert gold == instance.meta["gold_documents"] and len(gold) == 2
    assert sorted(instance.meta["gold_titles"]) == sorted(gold_titles)
    rest = [i for i, p in enumerate(paragraphs) if p in own and i not in gold]
    assert rest == instance.meta["hotpotqa_distractors"] and len(rest) == len(own) - 2
    titles = {t for t, _ in item["context"]}
    for p in paragraphs:
        if p not in own:  # a distractor: another question's paragraph, under another title
            assert owners[p] - {item["_id"]}
            assert p.split("\n", 1)[0] not in titles


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": HOTPOTQA.size + 1}, "bytes, not the pinned"),
        ({"sha256": "0" * 64}, "SHA-256 is not the pinned"),
        ({"version": "0.1"}, "pinned to 0.1"),
    ],
)
def test_a_tampered_pin_is_refused(change: dict[str, Any], message: str) -> None:
    task = HotpotqaTask(dataclasses.replace(HOTPOTQA, **change))
    with pytest.raises(ConfigError, match=message):
        task.generate(0, SMALL)


def test_base_instruction_is_rulers_prompt_after_the_documents() -> None:
    task = get_task("hotpotqa")
    instance = task.generate(0, SMALL)
    assert task.base_instruction(instance) == (
        f"{RULER_INSTRUCTION}\n\nQuestion: {instance.params['query']} Answer:"
    )


# --- the strategies through the real loop


def oracle_for(instance: Instance) -> Callable[[Messages], str]:
    """A sub-model that answers right when a gold paragraph's title is in the
    prompt (and NONE otherwise); a map-reduce reduce gets its first note back."""
    titles = instance.meta["gold_titles"]

    def reply(messages: Messages) -> str:
        text = str(messages[-1]["content"])
        if "Answer it from these notes" in text:
            notes = [n for n in text.split("\n\n", 1)[-1].splitlines() if n.strip() != "---"]
            return next((n for n in notes if n.strip()), "NONE")
        return str(instance.expected) if any(t in text for t in titles) else "NONE"

    return reply


def documents(instance: Instance) -> list[str]:
    """The context, which this task makes a list of documents."""
    assert isinstance(instance.context, list)
    return instance.context


def ranked(instance: Instance) -> list[int]:
    """The strategies' ranking, recomputed here: distinct question words held, ties by index."""
    stop = set(STOP_WORDS.split())

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z0-9]+", text.lower())) - stop

    asked = words(instance.params["query"])
    overlap = [len(asked & words(d)) for d in documents(instance)]
    return sorted(range(len(overlap)), key=lambda i: (-overlap[i], i))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_retrieve_read_scores_one_with_an_oracle_sub_model(backend: str, seed: int) -> None:
    task = get_task("hotpotqa")
    instance = task.generate(seed, SMALL)
    assert set(ranked(instance)[:TOP_K_DOCUMENTS]) & set(instance.meta["gold_documents"])
    sub = ScriptedModel(oracle_for(instance))
    record = run_strategy(
        task, instance, task.strategies()["retrieve-read"], backend, sub_model=sub.model
    )
    assert record.status == "ok", record.detail
    assert record.score == 1.0, (record.answer, record.expected)
    assert record.iterations == 1 and record.sub_calls == 1
    prompt = str(sub.calls[0][-1]["content"])
    assert prompt.startswith(RULER_INSTRUCTION) and prompt.endswith(" Answer:")
    assert prompt.count("\nDocument ") == TOP_K_DOCUMENTS  # each after a newline


@pytest.mark.parametrize("backend", BACKENDS)
def test_map_reduce_scores_one_with_an_oracle_sub_model(backend: str) -> None:
    task = get_task("hotpotqa")
    instance = task.generate(2, SMALL)
    sub = ScriptedModel(oracle_for(instance))
    record = run_strategy(
        task, instance, task.strategies()["map-reduce"], backend, sub_model=sub.model
    )
    assert record.status == "ok", record.detail
    assert record.score == 1.0, (record.answer, record.expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("seed", "size"), [(0, SMALL), (3, 131_072)])
def test_retrieve_titles_answers_the_best_documents_title_offline(
    backend: str, seed: int, size: int
) -> None:
    task = get_task("hotpotqa")
    instance = task.generate(seed, size)
    record = run_strategy(task, instance, task.strategies()["retrieve-titles"], backend)
    assert record.status == "ok", record.detail
    assert record.iterations == 1 and record.sub_calls == 0
    assert record.answer == documents(instance)[ranked(instance)[0]].split("\n")[1]
    assert record.scores == task.scores(instance, record.answer)
