"""Deterministic filler text and invented names for the generators.

Everything is drawn from a caller's :class:`random.Random`, so a task's
instance depends on its seed only. The filler is plain prose about ordinary
things; it never contains the words the needles and facts use ("magic",
"born", "capital", ...), so the gold answer is never in the filler by chance.
"""

from __future__ import annotations

import random

__all__ = [
    "PARAGRAPH_SENTENCES",
    "SENTENCE_POOL",
    "Filler",
    "filler_paragraphs",
    "invented_name",
    "sentence",
    "word_list",
]


def word_list(text: str, sep: str | None = None) -> tuple[str, ...]:
    """The words (or ``sep``-separated phrases) of ``text``: long lists stay readable."""
    return tuple(text.split(sep))


#: Distinct sentences drawn per generated text; the text samples from them.
SENTENCE_POOL = 4_000
#: Sentences per paragraph (one paragraph per line), inclusive range.
PARAGRAPH_SENTENCES = (3, 9)

_ADJECTIVES = word_list(
    "quiet old bright narrow wooden heavy gentle distant busy careful green yellow small large "
    "early late patient steady rough smooth warm cold wide tidy plain humble curious hidden "
    "open crowded empty faded sturdy simple ancient modern rural coastal northern"
)
_NOUNS = word_list(
    "river garden market village teacher farmer bridge window library kitchen harbor road "
    "lantern orchard meadow workshop baker painter letter basket wagon station valley forest "
    "hill field school clock ladder fence barn cottage pond path mill tower bell student "
    "neighbor traveler merchant carpenter fisherman notebook blanket kettle"
)
_VERBS = word_list(
    "watched repaired visited painted carried followed crossed cleaned described noticed "
    "measured opened closed passed admired counted moved sorted gathered planted"
)
_PLACES = word_list(
    "near the river|behind the mill|along the road|at the market|by the old bridge|"
    "in the valley|under the tower|beside the pond|across the field|inside the workshop",
    "|",
)
_TIMES = word_list(
    "in the morning|before noon|after the rain|every spring|during the harvest|at dusk|"
    "on most days|late in autumn|once a week|in winter",
    "|",
)
_SYLLABLES = word_list(
    "ba be bo da de di do fa fe fi ka ke ko la le li lo ma me mi mo na ne ni no pa pe po ra re "
    "ri ro sa se si so ta te ti to va ve vi zo zu"
)


def sentence(rng: random.Random) -> str:
    """One filler sentence."""
    a, b = rng.sample(_ADJECTIVES, 2)
    n1, n2 = rng.sample(_NOUNS, 2)
    shape = rng.randrange(4)
    if shape == 0:
        return f"The {a} {n1} {rng.choice(_VERBS)} the {b} {n2} {rng.choice(_PLACES)}."
    if shape == 1:
        return f"{rng.choice(_TIMES).capitalize()}, a {a} {n1} {rng.choice(_VERBS)} the {n2}."
    if shape == 2:
        return f"Nobody {rng.choice(_VERBS)} the {a} {n1} {rng.choice(_TIMES)}."
    return f"The {n1} {rng.choice(_PLACES)} was {a} and {b}, like the {n2}."


class Filler:
    """Filler prose drawn from a pool of ``SENTENCE_POOL`` sentences, all from ``rng``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.pool = [sentence(rng) for _ in range(SENTENCE_POOL)]
        self._mean = sum(len(s) + 1 for s in self.pool) / len(self.pool)

    def paragraphs(self, chars: int) -> list[str]:
        """Paragraphs (no newlines inside) whose lengths plus one newline each
        add up to exactly ``chars`` (the last one is cut)."""
        rng, low, high = self.rng, *PARAGRAPH_SENTENCES
        out: list[str] = []
        total = 0
        while total < chars:
            # Draw in bulk: 40M characters is ~700K sentences; one call each is too slow.
            need = int((chars - total) / self._mean) + high
            picks = rng.choices(self.pool, k=need)
            sizes = rng.choices(range(low, high + 1), k=need // low + 1)
            i = 0
            for size in sizes:
                if total >= chars or i >= len(picks):
                    break
                paragraph = " ".join(picks[i : i + size])
                i += size
                out.append(paragraph)
                total += len(paragraph) + 1
        excess = total - chars
        if excess and out:
            out[-1] = out[-1][: max(0, len(out[-1]) - excess)]
        return out


def filler_paragraphs(rng: random.Random, chars: int) -> list[str]:
    """``Filler(rng).paragraphs(chars)``: for one text; reuse a :class:`Filler` for many."""
    return Filler(rng).paragraphs(chars)


def invented_name(rng: random.Random, syllables: tuple[int, int] = (2, 3)) -> str:
    """A pronounceable invented word, capitalised (``"Kelimo"``): no world
    knowledge can answer a question about it."""
    count = rng.randint(*syllables)
    return "".join(rng.choice(_SYLLABLES) for _ in range(count)).capitalize()
