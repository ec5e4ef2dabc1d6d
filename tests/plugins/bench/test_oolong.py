"""OOLONG and OOLONG-Pairs: gold answers recomputed from the context alone.

The labels are read back from the question texts (every generated question
matches the templates of exactly one type), never from the generator."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from typing import Any

import pytest

from polyrlm.plugins.bench.oolong import COMPARISONS
from polyrlm.plugins.bench.oolong_data import (
    LABELS,
    RECORD_PATTERN,
    canonical_label,
    label_of_question,
    make_records,
)
from polyrlm.plugins.bench.task import Instance, get_task

Row = tuple[dt.date, int, str]


def rows(instance: Instance) -> list[Row]:
    assert isinstance(instance.context, str)
    out = []
    for line in instance.context.splitlines():
        match = RECORD_PATTERN.match(line)
        assert match, line
        day = dt.datetime.strptime(match.group(1), "%b %d, %Y").date()
        label = label_of_question(match.group(3))
        assert label is not None, match.group(3)
        out.append((day, int(match.group(2)), label))
    return out


def test_every_generated_question_has_exactly_one_type() -> None:
    import random

    records = make_records(random.Random("types"), 400_000, 50)
    assert all(label_of_question(r.question) == r.label for r in records)
    assert {r.label for r in records} == set(LABELS)
    # the type is never written next to the question
    lines = "\n".join(r.question for r in records)
    assert "human being" not in lines and "numeric value" not in lines


def expected_oolong(instance: Instance) -> Any:
    p = instance.params
    data = rows(instance)
    counts = Counter(label for _, _, label in data)
    kind = p["kind"]
    if kind == "count":
        return counts[p["label"]]
    if kind == "count_after":
        after = dt.date.fromisoformat(p["date"])
        return sum(1 for day, _, label in data if day > after and label == p["label"])
    if kind == "count_user":
        return sum(1 for _, user, label in data if user == p["user"] and label == p["label"])
    if kind == "most_common":
        return max(LABELS, key=lambda x: counts[x])
    if kind == "least_common":
        return min(LABELS, key=lambda x: counts[x])
    a, b = counts[p["label"]], counts[p["label_b"]]
    return COMPARISONS[0] if a > b else COMPARISONS[1] if a < b else COMPARISONS[2]


def test_oolong_gold_answers_match_the_context_for_every_kind() -> None:
    task = get_task("oolong")
    seen = set()
    for seed in range(40):
        instance = task.generate(seed, 6_000)
        assert instance.expected == expected_oolong(instance), (seed, instance.params["kind"])
        seen.add(instance.params["kind"])
    assert seen == {"count", "count_after", "count_user", "most_common", "least_common", "compare"}


def test_oolong_scores_numbers_labels_and_comparisons() -> None:
    task = get_task("oolong")
    by_kind: dict[str, Instance] = {}
    for seed in range(40):
        instance = task.generate(seed, 6_000)
        by_kind.setdefault(instance.params["kind"], instance)
    count = by_kind["count"]
    n = count.expected
    assert task.score(count, n) == 1.0
    assert task.score(count, f"There are {n + 2} such questions.") == pytest.approx(0.5625)
    top = by_kind["most_common"]
    assert task.score(top, top.expected) == 1.0
    assert task.score(top, top.expected.split()[0].upper() + ".") == 1.0  # "HUMAN." -> alias
    wrong = next(label for label in LABELS if label != top.expected)
    assert task.score(top, wrong) == 0.0
    compare = by_kind["compare"]
    word = compare.expected.split()[0]
    assert task.score(compare, compare.expected) == 1.0
    assert task.score(compare, word.capitalize()) == 1.0
    assert task.score(compare, "more or less") == 0.0  # names two answers


def test_canonical_label() -> None:
    assert canonical_label("Location.") == "location"
    assert canonical_label("the label: HUM") == "human being"
    assert canonical_label("description and abstract concept") == (
        "description and abstract concept"
    )
    assert canonical_label("a location or a person") is None


Days = dict[int, dict[str, list[dt.date]]]


def holds(days: Days, user: int, cond: list[list[Any]]) -> bool:
    got = days[user]
    for op, label, arg in cond:
        if op == "has":
            ok = len(got[label]) >= 1
        elif op == "none":
            ok = not got[label]
        elif op == "count":
            ok = len(got[label]) == arg
        else:
            ok = bool(got[label]) and min(got[label]) > dt.date.fromisoformat(arg)
        if not ok:
            return False
    return True


def test_oolong_pairs_gold_is_the_brute_force_listing() -> None:
    task = get_task("oolong-pairs")
    asymmetric = 0
    for seed in range(12):
        instance = task.generate(seed, 6_000)
        data = rows(instance)
        days: Days = defaultdict(lambda: defaultdict(list))
        for day, user, label in data:
            days[user][label].append(day)

        p, q = instance.params["cond_p"], instance.params["cond_q"] or instance.params["cond_p"]
        asymmetric += instance.params["cond_q"] is not None
        users = sorted(days)
        gold = [
            [a, b]
            for i, a in enumerate(users)
            for b in users[i + 1 :]
            if (holds(days, a, p) and holds(days, b, q))
            or (holds(days, b, p) and holds(days, a, q))
        ]
        assert gold == instance.expected, seed
        assert 0 < len(gold) < len(users) * (len(users) - 1) // 2
        assert task.score(instance, "\n".join(f"({a}, {b})" for a, b in gold)) == 1.0
        half = gold[: len(gold) // 2]
        if half:  # precision 1, recall |half|/|gold|
            recall = len(half) / len(gold)
            assert task.score(instance, half) == pytest.approx(2 * recall / (1 + recall))
    assert 0 < asymmetric < 12  # both query forms occur


def test_oolong_pairs_question_names_the_conditions() -> None:
    instance = get_task("oolong-pairs").generate(1, 6_000)
    for _, label, _ in instance.params["cond_p"]:
        assert f"'{label}'" in instance.question
    assert re.search(r"one pair per line", instance.question)
