"""``sniah``: one needle in a haystack (RULER's single NIAH, as in the RLM paper).

The haystack is filler prose (:mod:`polyrlm.plugins.bench.text`), one paragraph per
line; one sentence somewhere in it (a seeded depth) is the needle::

    The special magic number for crimson-otter is: 4817205.
    The special magic phrase for ivory-heron is: velvet thunder compass.

The question asks for the value of that key; the score is RULER's string
match, as the paper's S-NIAH: the value appears in a short answer, after
normalisation (:func:`polyrlm.plugins.bench.scoring.string_match`).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.plugins.bench.filter_map import FILTER_MAP
from polyrlm.plugins.bench.scoring import string_match
from polyrlm.plugins.bench.strategy import MAP_REDUCE, Strategy
from polyrlm.plugins.bench.task import Instance, Task
from polyrlm.plugins.bench.text import filler_paragraphs, word_list

__all__ = ["GREP", "SNIAH_MAX_TOKENS", "SNIAH_MIN_TOKENS", "SniahTask"]

#: Smallest haystack, in tokens.
SNIAH_MIN_TOKENS = 1_000
#: Largest haystack, in tokens (100 M characters).
SNIAH_MAX_TOKENS = 25_000_000

_KEY_COLOURS = word_list(
    "crimson amber violet indigo scarlet cobalt ivory silver golden copper teal maroon ochre "
    "azure russet"
)
_KEY_ANIMALS = word_list(
    "otter heron lynx badger falcon marten ibis gecko bison puffin walrus jackal ocelot tapir stoat"
)
_PHRASE_WORDS = word_list(
    "velvet thunder compass marble echo saffron glacier whisper cinder harbinger quartz "
    "lattice ember nimbus sable tundra zephyr obsidian"
)

#: Read the needle with a regular expression: it knows the needle's form, so it
#: is an upper bound on search, not a reading test; it needs no sub-model.
GREP = Strategy(
    name="grep",
    description="find the needle with one regular expression and read its value",
    note="knows the needle's form",
    code={
        "python": (
            """\
import re
m = re.search(<<pattern>>, context)
print(m.group(0) if m else "no match")
FINAL(m.group(1) if m else "")""",
        ),
        "sql": (
            """\
SELECT final(coalesce(min(regexp_extract(text, <<pattern>>, 1)), ''))
FROM context WHERE regexp_matches(text, <<pattern>>);""",
        ),
        "bash": (
            """\
prefix=<<prefix>>
hit=$(grep -m1 -oE <<pattern>> "$CONTEXT" | head -n 1)
echo "${hit:-no match}"
final "${hit#"$prefix"}\"""",
        ),
    },
)


class SniahTask(Task):
    """One needle (a number or a phrase) in unrelated prose."""

    name: ClassVar[str] = "sniah"
    description: ClassVar[str] = "one needle (number or phrase) in filler prose; RULER string match"
    metric: ClassVar[str] = "string match"
    default_sizes: ClassVar[tuple[int, ...]] = (8_192, 131_072, 1_048_576)
    min_size: ClassVar[int] = SNIAH_MIN_TOKENS
    max_size: ClassVar[int] = SNIAH_MAX_TOKENS

    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        key = f"{rng.choice(_KEY_COLOURS)}-{rng.choice(_KEY_ANIMALS)}"
        kind = rng.choice(("number", "phrase"))
        if kind == "number":
            value = str(rng.randrange(1_000_000, 10_000_000))
            value_re = "([0-9]+)"
        else:
            value = " ".join(rng.sample(_PHRASE_WORDS, 3))
            value_re = "([a-z]+ [a-z]+ [a-z]+)"
        prefix = f"The special magic {kind} for {key} is: "
        needle = f"{prefix}{value}."
        paragraphs = filler_paragraphs(rng, size * CHARS_PER_TOKEN - len(needle) - 1)
        depth = rng.random()
        line = min(int(depth * len(paragraphs)), len(paragraphs) - 1)
        sentences = paragraphs[line].split(". ")
        at = rng.randrange(len(sentences) + 1)
        sentences.insert(at, needle[:-1])  # joined back with ". "
        paragraphs[line] = ". ".join(sentences)
        if at == len(sentences) - 1 and not paragraphs[line].endswith("."):
            paragraphs[line] += "."
        context = "\n".join(paragraphs)
        return Instance(
            task=self.name,
            seed=seed,
            size=size,
            context=context,
            question=f"What is the special magic {kind} for {key} mentioned in the text?",
            expected=value,
            params={
                "key": key,
                "kind": kind,
                "prefix": prefix,
                "pattern": prefix + value_re,
                "answer_format": f"Reply with the {kind} only.",
            },
            meta={"needle": needle, "depth": round(depth, 4), "line": line + 1},
        )

    def score(self, instance: Instance, answer: Any) -> float:
        return string_match(answer, instance.expected)

    def strategies(self) -> dict[str, Strategy]:
        return {GREP.name: GREP, MAP_REDUCE.name: MAP_REDUCE, FILTER_MAP.name: FILTER_MAP}
