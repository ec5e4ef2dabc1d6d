"""Scripted sub-models that answer the strategies' prompts correctly, from
what the prompt itself holds (for end-to-end runs without a provider)."""

from __future__ import annotations

import re
from typing import Any

from polyrlm.plugins.bench.multihop import HOP_QUESTIONS, RELATIONS
from polyrlm.plugins.bench.oolong_data import label_of_question

Messages = list[dict[str, Any]]
_NEEDLE = re.compile(r"special magic \w+ for [a-z-]+ is: ([0-9]+|[a-z]+ [a-z]+ [a-z]+)")


def labeller(messages: Messages) -> str:
    """Types of numbered questions (one reply line each), or of the last line."""
    text = str(messages[-1]["content"])
    numbered = [(n, label_of_question(q)) for n, q in re.findall(r"^(\d+)\. (.*)$", text, re.M)]
    if any(label for _, label in numbered):
        return "\n".join(f"{n}. {label}" for n, label in numbered)
    return label_of_question(text.strip().splitlines()[-1]) or "unknown"


def hop_reader(messages: Messages) -> str:
    """Answers one hop's question from the documents under it."""
    text = str(messages[-1]["content"])
    first = text.split("\n", 1)[0]
    for relation, question in HOP_QUESTIONS.items():
        match = re.match(re.escape(question).replace(re.escape("{x}"), "(.+?)"), first)
        if match:
            before, between = RELATIONS[relation]
            pattern = "^" + re.escape(before + match.group(1) + between) + "([A-Z][a-z]+)"
            hit = re.search(pattern, text, re.M)
            return hit.group(1) if hit else "unknown"
    return "unknown"


def needle_reader(messages: Messages) -> str:
    """The map: the needle's value or NONE; the reduce: the first note."""
    text = str(messages[-1]["content"])
    hit = _NEEDLE.search(text)
    if hit:
        return hit.group(1)
    if "Answer it from these notes" in text:
        notes = [n for n in text.split("\n\n", 1)[-1].splitlines() if n.strip() not in ("", "---")]
        return notes[0] if notes else "NONE"
    return "NONE"
