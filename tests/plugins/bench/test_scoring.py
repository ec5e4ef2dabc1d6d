"""The scorers, on hand-checked cases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyrlm.plugins.bench.scoring import (
    choice_score,
    exact_match,
    normalize,
    numeric_score,
    pairs_f1,
    parse_choice,
    parse_number,
    parse_pairs,
    string_match,
)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (' "Blue  Fox." ', "blue fox"),
        ("Answer: 4817205", "4817205"),
        ("final answer is: Velvet Thunder Compass!", "velvet thunder compass"),
        ("(C)", "c"),
        ("ﬁne", "fine"),  # NFKC folds the ligature
        (["a", "b"], "a, b"),
        (None, ""),
    ],
)
def test_normalize(raw: object, normal: str) -> None:
    assert normalize(raw) == normal


def test_string_match_is_rulers() -> None:
    assert string_match("The special magic number for x is: 4817205.", "4817205") == 1.0
    assert string_match("velvet thunder compass", "Velvet Thunder") == 1.0
    assert string_match("48172050", "4817205") == 0.0  # whole words only
    assert string_match("velvet", "velvet thunder") == 0.0
    assert string_match("", "4817205") == 0.0
    assert string_match("filler " * 100 + "4817205", "4817205") == 0.0  # a dump is no answer


def test_exact_match() -> None:
    assert exact_match("The answer is: 4817205.", "4817205") == 0.0  # a sentence is not the value
    assert exact_match("Answer: 4817205.", "4817205") == 1.0
    assert exact_match(4817205, "4817205") == 1.0
    assert exact_match("velvet thunder", "velvet thunder compass") == 0.0
    assert exact_match("", "") == 0.0  # an empty answer never matches


@pytest.mark.parametrize(
    ("predicted", "expected", "score"),
    [
        (12, 12, 1.0),
        ("12", 12, 1.0),
        (10, 12, 0.75**2),  # 0.5625
        ("about 1,204 records", 1200, 0.75**4),
        ("Answer: 15", 12, 0.75**3),
        (12.5, 12, 0.75**0.5),
        ("none", 12, 0.0),
        (True, 1, 0.0),  # a bool is not a count
    ],
)
def test_numeric_score(predicted: object, expected: int, score: float) -> None:
    assert numeric_score(predicted, expected) == pytest.approx(score)


def test_numeric_score_hand_values() -> None:
    assert numeric_score(9, 12) == pytest.approx(0.421875)  # 0.75 ** 3 by hand
    assert numeric_score(13, 12) == pytest.approx(0.75)


def test_parse_number() -> None:
    assert parse_number("answer: -3") == -3
    assert parse_number("no digits") is None
    assert parse_number(7.0) == 7.0


def test_parse_pairs_from_lists_and_text() -> None:
    assert parse_pairs([[3, 1], (2, 5), [4, 4], [1, 3]]) == {(1, 3), (2, 5)}
    assert parse_pairs("(1, 3)\n5,2\n7 and 9; 4-6") == {(1, 3), (2, 5), (7, 9), (4, 6)}
    assert parse_pairs("no pairs here") == set()


def test_pairs_f1_hand_computed() -> None:
    gold = [(1, 2), (1, 3), (2, 3), (4, 5)]
    # predicted: (2, 1) right, (3, 1) right, (5, 6) wrong -> tp 2, precision 2/3, recall 2/4
    # F1 = 2 * (2/3) * (1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    assert pairs_f1([[2, 1], [3, 1], [5, 6]], gold) == pytest.approx(4 / 7)
    assert pairs_f1("(1, 2)\n(1, 3)\n(2, 3)\n(4, 5)", gold) == 1.0
    assert pairs_f1([], gold) == 0.0
    assert pairs_f1([], []) == 1.0
    assert pairs_f1([[1, 2]], []) == 0.0


@given(st.sets(st.tuples(st.integers(0, 30), st.integers(0, 30)).filter(lambda p: p[0] < p[1])))
def test_pairs_f1_of_the_gold_is_one(gold: set[tuple[int, int]]) -> None:
    assert pairs_f1([list(reversed(p)) for p in gold], gold) == 1.0


@given(
    st.sets(st.tuples(st.integers(0, 9), st.integers(10, 19)), min_size=1),
    st.sets(st.tuples(st.integers(0, 9), st.integers(10, 19)), min_size=1),
)
def test_pairs_f1_is_symmetric_and_bounded(
    a: set[tuple[int, int]], b: set[tuple[int, int]]
) -> None:
    score = pairs_f1(list(a), b)
    assert 0.0 <= score <= 1.0
    assert math.isclose(score, pairs_f1(list(b), a))


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(c)", "C"),
        ("Answer: D) json.decoder", "D"),
        ("The answer is A.", "A"),  # the one capital letter standing alone
        ("It is option C", "C"),
        ("A or B", None),
        ("json", None),
    ],
)
def test_parse_choice(reply: str, letter: str | None) -> None:
    assert parse_choice(reply) == letter


def test_choice_score_takes_a_letter_or_an_options_text() -> None:
    options = {"A": "json.decoder", "B": "asyncio.queues", "C": "dbm.dumb", "D": "antigravity"}
    assert choice_score("B", "B", options) == 1.0
    assert choice_score("asyncio.queues", "B", options) == 1.0
    assert choice_score("dbm.dumb", "B", options) == 0.0
    assert choice_score("no idea", "B", options) == 0.0
