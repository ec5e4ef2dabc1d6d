"""The RULER tasks: the scorer by hand, the generators against RULER's rules
(checked here independently of the generator's code), the pinned data file,
and the offline strategies through the real loop on every fast backend."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re

import pytest

from polyrlm.errors import ConfigError
from polyrlm.plugins.bench import packaged, ruler
from polyrlm.plugins.bench.methods import run_strategy
from polyrlm.plugins.bench.packaged import PAUL_GRAHAM_ESSAYS, packaged_path
from polyrlm.plugins.bench.ruler import (
    RULER_ANSWER_MAX_CHARS,
    RULER_DEPTHS,
    string_match_all,
)
from polyrlm.plugins.bench.task import Instance, get_task
from polyrlm.registry import get_registry
from polyrlm.testing.scripted import ScriptedModel
from tests.plugins.bench.oracles import needle_reader

NIAH = ("ruler-niah-single", "ruler-niah-multikey")
TASKS = (*NIAH, "ruler-vt")
#: Small size used throughout, tokens.
SMALL = 10_000
#: How far a context may be from the requested size (fraction; as test_generators.py).
TOLERANCE = 0.03
#: Fast backends, as tests/plugins/bench/test_strategies.py picks them.
BACKENDS = [
    b
    for b in ("python-inline", "sql", "bash", "wasm")
    if b in get_registry().specs() and get_registry().specs()[b].available
]
_NEEDLE = re.compile(r"One of the special magic numbers for ([a-z]+-[a-z]+) is: ([0-9]{7})\.")


def essay_words() -> list[str]:
    """RULER's haystack words, as its niah.py splits them."""
    text = json.loads(packaged_path(PAUL_GRAHAM_ESSAYS).read_text(encoding="utf-8"))["text"]
    return re.sub(r"\s+", " ", text).strip().split(" ")


# --- the scorer -------------------------------------------------------------------------


def test_string_match_all_is_the_fraction_of_references_found() -> None:
    assert string_match_all("AB, ef", ["ab", "cd", "ef"]) == pytest.approx(2 / 3)
    assert string_match_all("nothing here", ["ab", "cd"]) == 0.0
    assert string_match_all("The number is 4817205.", ["4817205"]) == 1.0
    assert string_match_all("abcde", "ABCDE") == 1.0  # one reference given alone


def test_string_match_all_takes_lists_numbers_and_any_case() -> None:
    assert string_match_all(["ABCDE", "fghij"], ["abcde", "FGHIJ", "KLMNO"]) == pytest.approx(2 / 3)
    assert string_match_all(4817205, ["4817205"]) == 1.0
    assert string_match_all([4817205], ["4817205"]) == 1.0
    assert string_match_all("Zesty-Banjo: 12", ["zesty-banjo"]) == 1.0


def test_string_match_all_refuses_empty_and_over_long_answers() -> None:
    assert string_match_all("", ["ab"]) == 0.0
    assert string_match_all("   \n", ["ab"]) == 0.0
    assert string_match_all(None, ["ab"]) == 0.0
    assert string_match_all([], ["ab"]) == 0.0
    fits = "ab" + "x" * (RULER_ANSWER_MAX_CHARS - 2)
    assert string_match_all(fits, ["ab"]) == 1.0
    assert string_match_all(fits + "x", ["ab"]) == 0.0  # a dump of the context is no answer


def test_the_task_scores_with_string_match_all() -> None:
    task = get_task("ruler-vt")
    instance = task.generate(0, SMALL)
    names = instance.expected
    assert task.score(instance, names) == 1.0
    assert task.score(instance, ", ".join(reversed(names)).lower()) == 1.0
    assert task.score(instance, names[:2]) == pytest.approx(2 / 5)
    assert task.scores(instance, names[:1]) == {"string match all": pytest.approx(1 / 5)}


# --- the generators ---------------------------------------------------------------------


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_and_size_give_the_same_instance_and_another_seed_differs(name: str) -> None:
    task = get_task(name)
    first, again = task.generate(3, SMALL), task.generate(3, SMALL)
    assert first.model_dump_json() == again.model_dump_json()
    other = task.generate(4, SMALL)
    assert other.context != first.context and other.expected != first.expected


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("size", [1_000, SMALL, 131_072])
def test_sizes_are_respected(name: str, size: int) -> None:
    instance = get_task(name).generate(0, size)
    assert instance.size == size
    assert abs(instance.tokens - size) <= size * TOLERANCE, instance.tokens


@pytest.mark.parametrize("name", TASKS)
def test_a_size_out_of_range_is_refused(name: str) -> None:
    task = get_task(name)
    with pytest.raises(ConfigError, match="out of range"):
        task.generate(0, task.max_size + 1)
    assert task.max_size >= 1_000_000 and task.min_size <= SMALL


def check_niah(instance: Instance, needles: int, words: list[str]) -> None:
    """The needles, the answer and the haystack, checked from the text alone."""
    context = instance.context
    assert isinstance(context, str)
    found = _NEEDLE.findall(context)
    assert len(found) == needles and len({k for k, _ in found}) == needles
    key = re.fullmatch(r"What is the special magic number for (\S+) mentioned in the provided "
                       r"text\?", instance.question).group(1)  # fmt: skip
    assert instance.expected == [dict(found)[key]]
    for match in _NEEDLE.finditer(context):
        # At a sentence start (a line start, or after ". ", "! ", "? "), or at the very
        # end (depth 100: after the last words, cut mid-sentence as RULER cuts them).
        before = context[: match.start()]
        at_end = match.end() == len(context) and before.endswith(" ")
        starts = before == "" or before.endswith("\n") or re.search(r"[.!?][\"')\]]* $", before)
        assert at_end or starts, before[-80:]
    # Without its needles, the haystack is RULER's word sequence, repeated as RULER does.
    haystack = _NEEDLE.sub(" ", context).split()
    copies = len(haystack) // len(words) + 1
    assert haystack == (words * copies)[: len(haystack)]


@pytest.mark.parametrize(
    ("name", "needles"), [("ruler-niah-single", 1), ("ruler-niah-multikey", 4)]
)
def test_niah_needles_are_in_the_essays_and_the_answer_is_the_asked_one(
    name: str, needles: int
) -> None:
    words = essay_words()
    for seed in range(3):
        instance = get_task(name).generate(seed, SMALL)
        check_niah(instance, needles, words)
        assert set(instance.meta["depths"]) <= set(RULER_DEPTHS)
        assert len(set(instance.meta["depths"])) == needles


def test_ruler_depths_are_rulers_forty() -> None:
    assert len(RULER_DEPTHS) == 40 and RULER_DEPTHS[:4] == (0, 3, 5, 8)
    assert RULER_DEPTHS[-2:] == (97, 100)


def test_vt_holds_one_chain_of_four_hops_from_the_asked_value() -> None:
    for seed in range(3):
        instance = get_task("ruler-vt").generate(seed, SMALL)
        context = instance.context
        assert isinstance(context, str)
        value = re.fullmatch(r"Find all variables that are assigned the value (\d{5}) in the "
                             r"text\.", instance.question).group(1)  # fmt: skip
        names = instance.expected
        assert len(names) == 5 and len(set(names)) == 5
        assert all(re.fullmatch(r"[A-Z]{5}", n) for n in names)
        assert context.count("VAR ") == 9  # VAR A = n, then four VAR B = VAR A
        assert context.count(f"VAR {names[0]} = {value} ") == 1
        for a, b in itertools.pairwise(names):
            assert context.count(f"VAR {b} = VAR {a} ") == 1
        # The noise is RULER's, one per line; every statement is inside a line.
        noise = re.sub(r"VAR [A-Z]+ = (VAR [A-Z]+|\d+) ", "", context)
        lines = [line.strip() for line in noise.split("\n") if line.strip()]
        assert set(lines) == {ruler.VT_NOISE}


def test_a_million_tokens_repeat_the_essays_and_keep_the_needles() -> None:
    words = essay_words()
    task = get_task("ruler-niah-multikey")
    instance = task.generate(0, 1_048_576)
    assert abs(instance.tokens - 1_048_576) <= 1_048_576 * TOLERANCE
    assert len(instance.context.split()) > len(words)  # more than one copy of the essays
    check_niah(instance, 4, words)
    vt = get_task("ruler-vt").generate(0, 1_048_576)
    assert abs(vt.tokens - 1_048_576) <= 1_048_576 * TOLERANCE
    assert vt.context.count("VAR ") == 9


# --- the pinned data file ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": PAUL_GRAHAM_ESSAYS.size + 1}, "bytes, not the pinned 3,108,615"),
        ({"sha256": "0" * 64}, "SHA-256 is not the pinned 0000"),
        ({"version": "26.2"}, "pinned to 26.2"),
    ],
)
def test_a_tampered_pin_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, object], message: str
) -> None:
    tampered = dataclasses.replace(PAUL_GRAHAM_ESSAYS, **change)
    with pytest.raises(ConfigError, match=message):
        packaged.packaged_path(tampered)
    monkeypatch.setattr(ruler, "PAUL_GRAHAM_ESSAYS", tampered)
    with pytest.raises(ConfigError, match=message):
        get_task("ruler-niah-single").generate(0, SMALL)


def test_the_essays_are_read_from_the_pinned_file() -> None:
    text = ruler.essay_text()
    assert text.split() == essay_words()  # RULER's words, line breaks kept between them
    assert "\n" in text and "  " not in text


# --- the offline strategies through the real loop ---------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("name", "strategy"), [(n, "grep") for n in NIAH] + [("ruler-vt", "chain")]
)
def test_offline_strategies_answer(backend: str, name: str, strategy: str) -> None:
    task = get_task(name)
    instance = task.generate(1, SMALL)
    record = run_strategy(task, instance, task.strategies()[strategy], backend)
    assert record.status == "ok", record.detail
    assert record.score == 1.0, (record.answer, record.expected)
    assert record.iterations == 1 and record.sub_calls == 0


@pytest.mark.parametrize("name", TASKS)
def test_every_task_offers_the_generic_map_reduce(name: str) -> None:
    strategies = get_task(name).strategies()
    assert "map-reduce" in strategies and strategies["map-reduce"].needs_sub_model
    offline = [s for s in strategies.values() if not s.needs_sub_model]
    assert offline and all(set(s.code) == {"python", "sql", "bash"} for s in offline)


@pytest.mark.parametrize("backend", BACKENDS)
def test_map_reduce_answers_the_single_needle_with_an_oracle_sub_model(backend: str) -> None:
    task = get_task("ruler-niah-single")
    instance = task.generate(2, 60_000)  # 240k characters: three map chunks
    sub = ScriptedModel(needle_reader)
    record = run_strategy(
        task, instance, task.strategies()["map-reduce"], backend, sub_model=sub.model
    )
    assert record.status == "ok", record.detail
    assert record.score == 1.0, (record.answer, record.expected)
    assert record.sub_calls >= 2
