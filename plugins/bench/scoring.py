"""The scorers of the benchmark tasks, as the RLM paper (arXiv 2512.24601) scores them.

* RULER's string match for S-NIAH: the needle's value appears in a short answer;
* exact match after normalisation (OOLONG's label answers, multi-hop);
* ``0.75 ** |y - y_hat|`` for numeric answers (OOLONG);
* F1 over the listed pairs (OOLONG-Pairs);
* the chosen option of a multiple-choice question (CodeQA);
* HotpotQA's official answer metrics (``hotpot_evaluate_v1.py``): exact match
  and token F1 after its ``normalize_answer`` (HotpotQA).

Answers come from an environment (a number, a string, a list) or from a base
model's reply (prose); each scorer accepts both. Scores are in [0, 1].
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = [
    "NUMERIC_BASE",
    "STRING_MATCH_MAX_CHARS",
    "choice_score",
    "exact_match",
    "hotpot_answer_text",
    "hotpot_em",
    "hotpot_f1",
    "hotpot_scores",
    "normalize",
    "normalize_answer",
    "numeric_score",
    "pairs_f1",
    "parse_choice",
    "parse_number",
    "parse_pairs",
    "string_match",
]

#: Longest answer (characters) :func:`string_match` accepts: a dump of the
#: context that happens to hold the needle is not an answer.
STRING_MATCH_MAX_CHARS = 500
#: Base of the numeric score: an answer off by d scores NUMERIC_BASE ** d (the paper's 0.75).
NUMERIC_BASE = 0.75

_ANSWER_LABEL = re.compile(r"^\s*(?:final\s+)?answer\s*(?:is)?\s*[:=\-]\s*", re.IGNORECASE)
_EDGE = " \t\r\n.,;:!?\"'`()[]{}*"
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_PAIR = re.compile(r"(\d+)\s*(?:,|;|\band\b|&|-|\s)\s*(\d+)")


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def normalize(value: Any) -> str:
    """Case-folded, NFKC, an ``Answer:`` label dropped, edge punctuation and
    quotes stripped, inner whitespace collapsed: ``' "Blue  Fox." '`` -> ``'blue fox'``."""
    text = unicodedata.normalize("NFKC", _text(value))
    text = _ANSWER_LABEL.sub("", text)
    text = " ".join(text.split()).strip(_EDGE)
    return " ".join(text.split()).casefold()


def exact_match(predicted: Any, expected: Any) -> float:
    """1.0 when both normalise to the same text, else 0.0."""
    return float(normalize(predicted) == normalize(expected) != "")


def string_match(predicted: Any, expected: Any) -> float:
    """RULER's NIAH metric (as the RLM paper's S-NIAH uses it): 1.0 when the
    normalised value appears in the normalised answer, as whole words
    (``'The phrase is: velvet thunder.'`` matches ``'velvet thunder'``); 0.0
    for an empty answer or one longer than :data:`STRING_MATCH_MAX_CHARS`."""
    answer, value = normalize(predicted), normalize(expected)
    if not value or not answer or len(answer) > STRING_MATCH_MAX_CHARS:
        return 0.0
    return float(re.search(rf"(?<!\w){re.escape(value)}(?!\w)", answer) is not None)


def parse_number(value: Any) -> float | None:
    """The answer as a number: a number itself, or the first number in the
    text after any ``Answer:`` label (``'about 1,204 records'`` -> 1204)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    match = _NUMBER.search(_ANSWER_LABEL.sub("", _text(value)))
    return float(match.group(0).replace(",", "")) if match else None


def numeric_score(predicted: Any, expected: float) -> float:
    """``NUMERIC_BASE ** |expected - predicted|``; 0.0 when no number is given."""
    number = parse_number(predicted)
    if number is None:
        return 0.0
    return float(NUMERIC_BASE ** abs(float(expected) - number))


def parse_pairs(value: Any) -> set[tuple[int, int]]:
    """Unordered pairs of distinct integers, each as ``(low, high)``, from a
    list of pairs (``[[3, 1], (2, 5)]``) or a text (``'(1, 3)\\n2,5'``)."""
    pairs: set[tuple[int, int]] = set()
    items: Iterable[Any]
    if isinstance(value, list | tuple) and all(isinstance(v, list | tuple) for v in value):
        items = value
    else:
        items = ((a, b) for a, b in _PAIR.findall(_text(value)))
    for item in items:
        if len(item) != 2:
            continue
        try:
            a, b = int(item[0]), int(item[1])
        except (TypeError, ValueError):
            continue
        if a != b:
            pairs.add((min(a, b), max(a, b)))
    return pairs


def pairs_f1(predicted: Any, expected: Iterable[tuple[int, int]]) -> float:
    """F1 of the predicted pairs against the expected ones (order inside a
    pair and duplicates do not matter). Both empty: 1.0."""
    gold = parse_pairs(list(expected))
    guess = parse_pairs(predicted)
    if not gold and not guess:
        return 1.0
    hits = len(gold & guess)
    if hits == 0:
        return 0.0
    precision, recall = hits / len(guess), hits / len(gold)
    return 2 * precision * recall / (precision + recall)


def parse_choice(value: Any, letters: str = "ABCD") -> str | None:
    """The option letter chosen: ``'B'``, ``'(b)'``, ``'Answer: C) json'``,
    ``'the answer is D'``; None when the text names no single option letter."""
    text = _ANSWER_LABEL.sub("", _text(value)).strip()
    head = re.match(rf"^\(?([{letters}])(?:\)|\.|:|$)", text, re.IGNORECASE)
    if head:
        return head.group(1).upper()
    found = set(re.findall(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", text))
    return found.pop() if len(found) == 1 else None


def choice_score(predicted: Any, expected: str, options: dict[str, str] | None = None) -> float:
    """1.0 when the predicted option is ``expected`` (a letter). A reply that
    gives an option's text instead of its letter counts when ``options``
    (letter -> text) is given and the text matches exactly one option."""
    letter = parse_choice(predicted)
    if letter is None and options:
        wanted = normalize(predicted)
        matches = [k for k, v in options.items() if normalize(v) == wanted]
        letter = matches[0] if len(matches) == 1 else None
    return float(letter == expected.upper())


#: Answers HotpotQA's F1 never gives partial credit: yes/no questions, and "noanswer".
_HOTPOT_CLOSED = frozenset({"yes", "no", "noanswer"})
_HOTPOT_ARTICLES = re.compile(r"\b(a|an|the)\b")
_HOTPOT_PUNCTUATION = str.maketrans("", "", string.punctuation)


def hotpot_answer_text(value: Any) -> str:
    """An answer as the text HotpotQA scores: a string as it is; None as "";
    a bool as "yes" / "no" (an environment's answer to a yes/no question); a
    list or tuple as its items' texts joined by spaces (every item counts, so
    listing candidates costs precision instead of passing by its first item);
    anything else as ``str``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return " ".join(t for t in (hotpot_answer_text(v) for v in value) if t)
    return str(value)


def normalize_answer(value: Any) -> str:
    """HotpotQA's ``normalize_answer``: lower case, ASCII punctuation removed,
    the articles a / an / the removed, whitespace collapsed:
    ``'The Eiffel-Tower!'`` -> ``'eiffeltower'``."""
    text = hotpot_answer_text(value).lower().translate(_HOTPOT_PUNCTUATION)
    return " ".join(_HOTPOT_ARTICLES.sub(" ", text).split())


def hotpot_em(predicted: Any, expected: Any) -> float:
    """HotpotQA's exact match: 1.0 when both normalise to the same text."""
    return float(normalize_answer(predicted) == normalize_answer(expected))


def hotpot_f1(predicted: Any, expected: Any) -> float:
    """HotpotQA's token F1 over the normalised answers (a token counted as
    often as it appears in both); 0.0 when either is yes / no / noanswer
    and they differ, or when they share no token."""
    guess, gold = normalize_answer(predicted), normalize_answer(expected)
    if (guess in _HOTPOT_CLOSED or gold in _HOTPOT_CLOSED) and guess != gold:
        return 0.0
    guess_tokens, gold_tokens = guess.split(), gold.split()
    same = sum((Counter(guess_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(guess_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def hotpot_scores(predicted: Any, expected: Any) -> dict[str, float]:
    """Both HotpotQA answer metrics: ``{"f1": ..., "em": ...}``."""
    return {"f1": hotpot_f1(predicted, expected), "em": hotpot_em(predicted, expected)}
