"""RULER tasks on RULER's own data (Hsieh et al., "RULER: What's the Real
Context Size of Your Long-Context Language Models?", NVIDIA, 2024).

Three of RULER's synthetic tasks, generated the way RULER's generators
(``long_context_eval/data/synthetic/niah.py`` and ``variable_tracking.py`` in
``nvidia-long-context-eval`` 26.3) generate them, and scored as RULER scores
them (``string_match_all``):

* ``ruler-niah-single`` (RULER's ``niah_single_2``): Paul Graham's essays as
  the haystack, one needle ``One of the special magic numbers for KEY is:
  VALUE.`` with a 7-digit value and a word key;
* ``ruler-niah-multikey`` (``niah_multikey_1``): the same with 4 needles of
  distinct keys, one of them asked;
* ``ruler-vt`` (``vt``): one chain of 4 hops, ``VAR A = 12345`` then
  ``VAR B = VAR A`` ..., in RULER's repeated noise sentences; the question
  asks for every variable holding the value.

The essay haystack, as RULER builds it: the first N words of the essays (all
whitespace runs are one word break), the needles inserted at sentence starts,
at depths drawn from RULER's 40 depths (0 to 100 %). When more words are
asked than the essays hold (about 750k tokens here), RULER's current GitHub
generator repeats the word list (``(haystack * repeats)[:num_haystack]``);
we do the same, starting each copy on a new line (the 26.3 package's copy
of niah.py still stops at the essays' end instead). Where we differ from
RULER, and why:

* sizes are characters / :data:`~polyrlm.config.CHARS_PER_TOKEN`, not a
  tokenizer's count (the project's rule for every task);
* a whitespace run that holds a line break stays one line break (RULER makes
  every run a space, so its context is one line): the SQL backend has one
  row per line and Bash tools read lines, and a 3 MB single line would be
  one row. A needle never holds a line break, so it is always inside a line;
* sentence starts come from a simple rule (after ``.``, ``!`` or ``?`` and
  whitespace, before a capital or digit) instead of NLTK's punkt (not a
  dependency); it moves a needle by a sentence at most;
* keys are ``adjective-noun`` from our own word lists (RULER draws them from
  the ``wonderwords`` lists, which the package does not ship);
* the question is RULER's question sentence alone: RULER's preamble ("...
  hidden within the following text") and, for vt, its one-shot example are
  prompt framing for a model that reads the context inline.
"""

from __future__ import annotations

import functools
import json
import random
import re
import string
from pathlib import Path
from typing import Any, ClassVar

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.plugins.bench.filter_map import FILTER_MAP
from polyrlm.plugins.bench.packaged import PAUL_GRAHAM_ESSAYS, packaged_path
from polyrlm.plugins.bench.ruler_strategies import CHAIN
from polyrlm.plugins.bench.sniah import GREP
from polyrlm.plugins.bench.strategy import MAP_REDUCE, Strategy
from polyrlm.plugins.bench.task import Instance, Task
from polyrlm.plugins.bench.text import word_list

__all__ = [
    "MULTIKEY_NEEDLES",
    "NIAH_NEEDLE",
    "NIAH_QUESTION",
    "NIAH_VALUE_DIGITS",
    "RULER_ANSWER_MAX_CHARS",
    "RULER_DEPTHS",
    "RULER_MAX_TOKENS",
    "RULER_MIN_TOKENS",
    "VT_HOPS",
    "VT_NAME_LETTERS",
    "VT_NOISE",
    "VT_QUESTION",
    "RulerNiahMultikeyTask",
    "RulerNiahSingleTask",
    "RulerVtTask",
    "essay_text",
    "string_match_all",
]

#: Smallest context, in tokens.
RULER_MIN_TOKENS = 1_000
#: Largest context, in tokens (about 16.8 M characters, 5.6 copies of the essays).
RULER_MAX_TOKENS = 4_194_304
#: Longest answer (characters) scored: a dump of the context that happens to
#: hold every reference is not an answer (as scoring.STRING_MATCH_MAX_CHARS).
RULER_ANSWER_MAX_CHARS = 500

#: RULER's needle (its ``type_needle_v`` is the plural "numbers").
NIAH_NEEDLE = "One of the special magic numbers for {key} is: {value}."
#: RULER's question for one asked key with one value (its template, singular).
NIAH_QUESTION = "What is the special magic number for {key} mentioned in the provided text?"
#: Digits of a needle's value (RULER's ``generate_random_number``).
NIAH_VALUE_DIGITS = 7
#: Needles of niah_multikey_1 (``num_needle_k: 4`` in RULER's synthetic.yaml).
MULTIKEY_NEEDLES = 4
#: RULER's needle depths, percent: ``np.round(np.linspace(0, 100, 40))`` (no
#: value falls on a .5, so Python's round gives the same integers).
RULER_DEPTHS = tuple(round(i * 100 / 39) for i in range(40))

#: RULER's vt noise, one per line.
VT_NOISE = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)
#: Hops of the one chain (RULER's vt: ``num_chains: 1``, ``num_hops: 4``): 5 variables.
VT_HOPS = 4
#: Letters of a variable name (RULER: 5 uppercase letters).
VT_NAME_LETTERS = 5
#: Range of the chain's value, half-open (RULER: ``np.random.randint(10000, 99999)``).
VT_VALUES = (10_000, 99_999)
#: RULER's vt question, without its "above" (the context is not above the question here).
VT_QUESTION = "Find all variables that are assigned the value {value} in the text."

# A sentence starts after ., ! or ? (and closing quotes or brackets) and
# whitespace, at a capital or a digit (an opening quote or bracket allowed).
_SENTENCE_START = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(]?[A-Z0-9])")
_KEY_ADJECTIVES = word_list(
    "abrupt agile amused ancient bitter bold brave breezy brisk calm clever crisp curly dapper "
    "eager faint fancy fierce fluffy frosty gentle giddy glossy grumpy hollow humble icy jolly "
    "lively lucky mellow misty nimble plucky quaint rapid rustic shiny silent sleepy snappy "
    "spiky stormy sunny tender tidy vivid witty zesty"
)
_KEY_NOUNS = word_list(
    "anchor apricot badge banjo beacon biscuit blossom boulder bucket cabin candle canyon "
    "castle cobweb comet cricket dagger dolphin engine feather fiddle glacier goblet harbor "
    "helmet island jacket kettle lantern meadow mitten nugget orchid pebble pillow quiver "
    "ribbon saddle scooter spindle tractor trumpet tulip violin walnut whistle"
)


def _text(answer: Any) -> str:
    if answer is None:
        return ""
    if isinstance(answer, list | tuple | set | frozenset):
        return ", ".join(_text(a) for a in answer)
    return str(answer)


def string_match_all(predicted: Any, references: Any) -> float:
    """RULER's ``string_match_all``: the fraction of ``references`` each found
    in the answer as a substring, case-insensitively (``['ab', 'cd', 'ef']``
    against ``'AB, ef'`` scores 2/3). The answer may be a string, a list (its
    items joined with ``", "``) or a number; it is stripped and its control
    characters made line breaks, as RULER's ``postprocess_pred`` does. An
    empty answer, or one longer than :data:`RULER_ANSWER_MAX_CHARS`, scores 0."""
    refs = [references] if isinstance(references, str | int | float) else list(references)
    text = re.sub(r"[\x00-\x1f]", "\n", _text(predicted).strip()).strip()
    if not refs or not text or len(text) > RULER_ANSWER_MAX_CHARS:
        return 0.0
    lowered = text.lower()
    return sum(str(r).lower() in lowered for r in refs) / len(refs)


@functools.cache
def _normalised_essays(path: Path, mtime_ns: int) -> str:
    # Keyed by mtime too: a reinstalled file is read again.
    raw = json.loads(path.read_text(encoding="utf-8"))["text"]
    # RULER's word breaks (every whitespace run), a run with a line break kept as one.
    lines = re.sub(r"\s*\n\s*", "\n", raw.strip())
    return re.sub(r"[^\S\n]+", " ", lines)


def essay_text() -> str:
    """RULER's essay haystack, whitespace normalised (see the module's
    docstring), once :func:`~polyrlm.plugins.bench.packaged.packaged_path`
    has checked the pinned file."""
    path = packaged_path(PAUL_GRAHAM_ESSAYS)
    return _normalised_essays(path, path.stat().st_mtime_ns)


def _haystack(chars: int) -> str:
    """The essays' first words up to ``chars`` characters, repeated as RULER
    repeats them when it needs more words than they hold."""
    essays = essay_text()
    copies = chars // (len(essays) + 1) + 1
    text = "\n".join([essays] * copies)
    if len(text) <= chars:
        return text
    # Cut at a word break, as RULER takes whole words.
    cut = max(text.rfind(" ", 0, chars + 1), text.rfind("\n", 0, chars + 1))
    return text[: max(cut, 0)]


def _insert_needles(rng: random.Random, text: str, needles: list[str]) -> tuple[str, list[int]]:
    """``text`` with each needle at the start of a sentence, at RULER's depths
    (drawn without repeats, sorted, needles shuffled, as RULER does); the depths too."""
    starts = [0, *(m.end() for m in _SENTENCE_START.finditer(text))]
    depths = sorted(rng.sample(RULER_DEPTHS, len(needles)))
    order = list(needles)
    rng.shuffle(order)
    at = [int(len(starts) * d / 100) for d in depths]  # len(starts): after the last
    # From the end backwards, so the offsets of the earlier ones still hold.
    for index, needle in sorted(zip(at, order, strict=True), reverse=True):
        if index >= len(starts):
            text = f"{text} {needle}"
        else:
            offset = starts[index]
            text = f"{text[:offset]}{needle} {text[offset:]}"
    return text, depths


class _RulerNiahTask(Task):
    """RULER's NIAH over the essays: ``needles`` needles, one key asked."""

    metric: ClassVar[str] = "string match all"
    default_sizes: ClassVar[tuple[int, ...]] = (8_192, 131_072, 1_048_576)
    min_size: ClassVar[int] = RULER_MIN_TOKENS
    max_size: ClassVar[int] = RULER_MAX_TOKENS
    needles: ClassVar[int]

    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        keys = rng.sample([f"{a}-{n}" for a in _KEY_ADJECTIVES for n in _KEY_NOUNS], self.needles)
        low = 10 ** (NIAH_VALUE_DIGITS - 1)
        values = [str(rng.randint(low, 10 * low - 1)) for _ in keys]
        needles = [NIAH_NEEDLE.format(key=k, value=v) for k, v in zip(keys, values, strict=True)]
        room = size * CHARS_PER_TOKEN - sum(len(n) + 1 for n in needles)
        context, depths = _insert_needles(rng, _haystack(room), needles)
        asked = rng.randrange(len(keys))
        key = keys[asked]
        prefix = NIAH_NEEDLE.format(key=key, value="")
        return Instance(
            task=self.name,
            seed=seed,
            size=size,
            context=context,
            question=NIAH_QUESTION.format(key=key),
            expected=[values[asked]],
            params={
                "key": key,
                # Keys are [a-z]+-[a-z]+: literal in Python, RE2 and POSIX ERE alike.
                "pattern": prefix[:-1] + "([0-9]+)",
                "prefix": prefix[:-1],  # the needle before its number (sniah's grep reads it)
                "answer_format": "Reply with the number only.",
            },
            meta={
                "needles": needles,
                "depths": depths,
                "lines": [context.count("\n", 0, context.index(n)) + 1 for n in needles],
            },
        )

    def score(self, instance: Instance, answer: Any) -> float:
        return string_match_all(answer, instance.expected)

    def strategies(self) -> dict[str, Strategy]:
        return {s.name: s for s in (GREP, MAP_REDUCE, FILTER_MAP)}


class RulerNiahSingleTask(_RulerNiahTask):
    """RULER's ``niah_single_2``: one number needle in Paul Graham's essays."""

    name: ClassVar[str] = "ruler-niah-single"
    description: ClassVar[str] = (
        "RULER niah_single_2: one number needle in Paul Graham's essays; string match all"
    )
    needles: ClassVar[int] = 1


class RulerNiahMultikeyTask(_RulerNiahTask):
    """RULER's ``niah_multikey_1``: 4 needles of distinct keys, one asked."""

    name: ClassVar[str] = "ruler-niah-multikey"
    description: ClassVar[str] = (
        "RULER niah_multikey_1: 4 keyed number needles in the essays, one asked; string match all"
    )
    needles: ClassVar[int] = MULTIKEY_NEEDLES


class RulerVtTask(Task):
    """RULER's ``vt``: one chain of variable assignments in repeated noise.

    As RULER: 5 distinct names of 5 uppercase letters, the first assigned a
    5-digit number, each next one the previous (``VAR B = VAR A `` with
    RULER's trailing space); the noise is :data:`VT_NOISE` once per line, the
    statements go before sorted random noise lines, and the pieces are joined
    with a space (so lines after the first start with one). The answer is the
    list of the 5 names (in chain order; the scorer ignores the order)."""

    name: ClassVar[str] = "ruler-vt"
    description: ClassVar[str] = (
        "RULER vt: a 4-hop chain of VAR assignments in noise; name every variable; string match all"
    )
    metric: ClassVar[str] = "string match all"
    default_sizes: ClassVar[tuple[int, ...]] = (8_192, 131_072, 1_048_576)
    min_size: ClassVar[int] = RULER_MIN_TOKENS
    max_size: ClassVar[int] = RULER_MAX_TOKENS

    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        names: list[str] = []
        while len(names) < VT_HOPS + 1:  # distinct names (RULER draws again on a repeat)
            name = "".join(rng.choices(string.ascii_uppercase, k=VT_NAME_LETTERS))
            if name not in names:
                names.append(name)
        value = str(rng.randrange(*VT_VALUES))
        chain = [f"VAR {names[0]} = {value}"]
        chain += [f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(VT_HOPS)]
        noise = VT_NOISE + "\n"
        room = size * CHARS_PER_TOKEN - sum(len(c) + 1 for c in chain)
        count = max(len(chain) + 1, round(room / (len(noise) + 1)))  # +1: the joining space
        pieces = [noise] * count
        positions = sorted(rng.sample(range(count), len(chain)))
        for j, (position, statement) in enumerate(zip(positions, chain, strict=True)):
            pieces.insert(position + j, statement)
        context = " ".join(pieces)
        return Instance(
            task=self.name,
            seed=seed,
            size=size,
            context=context,
            question=VT_QUESTION.format(value=value),
            expected=names,
            params={
                "value": value,
                "answer_format": "Reply with the variable names only, separated by commas.",
            },
            meta={
                "chain": [c.strip() for c in chain],
                "lines": [context.count("\n", 0, context.index(c)) + 1 for c in chain],
            },
        )

    def score(self, instance: Instance, answer: Any) -> float:
        return string_match_all(answer, instance.expected)

    def strategies(self) -> dict[str, Strategy]:
        return {CHAIN.name: CHAIN, MAP_REDUCE.name: MAP_REDUCE}
