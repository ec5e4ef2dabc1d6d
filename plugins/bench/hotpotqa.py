"""``hotpotqa``: real multi-hop questions over many Wikipedia paragraphs, as
RULER builds its HotpotQA task (``qa_2``).

One question of HotpotQA's dev set (a seeded choice) comes with its own ten
paragraphs, the two gold ones its supporting facts name and the eight
distractors HotpotQA retrieved for it (RULER keeps all ten too); paragraphs
of other questions, drawn at random, fill the context up to about ``size``
tokens, and the whole list is shuffled, so the gold paragraphs sit at seeded
positions. Each document is RULER's ``Document N:\\n{title}\\n{text}``,
numbered from 1 in context order. The question is RULER's template without
its context; answers are scored as HotpotQA's official script scores them,
token F1 (shown) and exact match.

Unlike RULER, which draws a question's added distractors from every other
paragraph, a paragraph that shares a title with one of the question's own is
never added (the file holds a few titles twice, with different texts), so
the gold facts come from the gold paragraphs only. A paragraph of another
question may still happen to bear on this one, as in RULER.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.plugins.bench.hotpotqa_data import (
    DOCUMENT_TEMPLATE,
    RULER_ANSWER_FORMAT,
    RULER_INSTRUCTION,
    HotpotData,
    HotpotQuestion,
    document_header_chars,
    hotpotqa_data,
)
from polyrlm.plugins.bench.hotpotqa_strategies import RETRIEVE_READ, RETRIEVE_TITLES
from polyrlm.plugins.bench.packaged import HOTPOTQA, PackagedFile
from polyrlm.plugins.bench.scoring import hotpot_scores
from polyrlm.plugins.bench.strategy import MAP_REDUCE, Strategy
from polyrlm.plugins.bench.task import Instance, Task

__all__ = ["FILL_SLACK_CHARS", "HOTPOTQA_MAX_TOKENS", "HOTPOTQA_MIN_TOKENS", "HotpotqaTask"]

#: Smallest context, in tokens: the own paragraphs of 7,404 of the 7,405 questions
#: fit in it (a question whose own do not fit is not chosen at that size).
HOTPOTQA_MIN_TOKENS = 4_000
#: Largest context, in tokens: the file's 66,635 distinct paragraphs hold about
#: 37.9 M characters with their headers (9.47 M tokens); this leaves a margin
#: for the paragraphs a question excludes.
HOTPOTQA_MAX_TOKENS = 9_000_000
#: Characters of room left below which filling stops: the shortest paragraph
#: with its header is about 60 characters, so no further one is worth a scan.
FILL_SLACK_CHARS = 100


def _fits(question: HotpotQuestion, target_chars: int) -> bool:
    headers = sum(document_header_chars(n) for n in range(1, len(question.own) + 1))
    return question.own_chars + headers <= target_chars


def _fill(
    rng: random.Random, data: HotpotData, question: HotpotQuestion, target_chars: int
) -> tuple[list[int], int]:
    """The question's own paragraphs, then others in a seeded order while they
    fit in ``target_chars`` (headers counted); the pool indices and the chars."""
    chosen = list(question.own)
    total = question.own_chars + sum(document_header_chars(n) for n in range(1, len(chosen) + 1))
    order = list(range(len(data.paragraphs)))
    rng.shuffle(order)
    for index in order:
        room = target_chars - total
        if room < FILL_SLACK_CHARS:
            break
        if data.titles[index] in question.titles:
            continue
        # The sum of the headers does not depend on the final order: count them here.
        cost = len(data.paragraphs[index]) + document_header_chars(len(chosen) + 1)
        if cost <= room:
            chosen.append(index)
            total += cost
    return chosen, total


class HotpotqaTask(Task):
    """A HotpotQA question among its own and other questions' paragraphs."""

    name: ClassVar[str] = "hotpotqa"
    description: ClassVar[str] = (
        "HotpotQA multi-hop questions among RULER-style distractor paragraphs; F1"
    )
    metric: ClassVar[str] = "F1 (HotpotQA)"
    default_sizes: ClassVar[tuple[int, ...]] = (8_192, 131_072)
    min_size: ClassVar[int] = HOTPOTQA_MIN_TOKENS
    max_size: ClassVar[int] = HOTPOTQA_MAX_TOKENS

    def __init__(self, pinned: PackagedFile = HOTPOTQA) -> None:
        #: The data file read (tests pass a changed pin to see it refused).
        self.pinned = pinned

    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        data = hotpotqa_data(self.pinned)
        target = size * CHARS_PER_TOKEN
        fitting = [q for q in data.questions if _fits(q, target)]
        question = fitting[rng.randrange(len(fitting))]
        chosen, _ = _fill(rng, data, question, target)
        rng.shuffle(chosen)
        context = [
            DOCUMENT_TEMPLATE.format(i=n, document=data.paragraphs[index])
            for n, index in enumerate(chosen, 1)
        ]
        position = {index: n for n, index in enumerate(chosen)}
        gold = sorted(position[i] for i in question.gold)
        own = sorted(position[i] for i in question.own if i not in question.gold)
        return Instance(
            task=self.name,
            seed=seed,
            size=size,
            context=context,
            question=f"{RULER_INSTRUCTION}\n\nQuestion: {question.question}",
            expected=question.answer,
            params={
                "query": question.question,
                # MAP_REDUCE writes "Question: <<question>>": give it the bare question.
                "question": question.question,
                "instruction": RULER_INSTRUCTION,
                "answer_format": RULER_ANSWER_FORMAT,
            },
            meta={
                "hotpotqa_id": question.id,
                "type": question.type,
                "level": question.level,
                "documents": len(context),
                # Indices into the context list, from 0 (the headers number from 1).
                "gold_documents": gold,
                "gold_titles": [data.titles[i] for i in question.gold],
                "hotpotqa_distractors": own,
            },
        )

    def score(self, instance: Instance, answer: Any) -> float:
        return hotpot_scores(answer, instance.expected)["f1"]

    def scores(self, instance: Instance, answer: Any) -> dict[str, float]:
        return hotpot_scores(answer, instance.expected)

    def base_instruction(self, instance: Instance) -> str:
        # RULER's prompt after its documents, word for word (and its answer prefix).
        return f"{RULER_INSTRUCTION}\n\nQuestion: {instance.params['query']} Answer:"

    def strategies(self) -> dict[str, Strategy]:
        return {
            RETRIEVE_READ.name: RETRIEVE_READ,
            MAP_REDUCE.name: MAP_REDUCE,
            RETRIEVE_TITLES.name: RETRIEVE_TITLES,
        }
