"""``codeqa``: multiple-choice questions about a real source tree, the
installed Python standard library (nobody here wrote it), as in LongBench-v2
CodeQA: the tree is the context, four options, one right.

A size picks a seeded subset of the library's modules (tests, idlelib,
lib2to3, site-packages left out) whose sources add up to about that many
tokens; each module is one section of the context, under a header line::

    ##### module json.decoder (file json/decoder.py) #####

Questions, answered from the sources by :mod:`ast` (see
:mod:`polyrlm.plugins.bench.codeqa_source`):

* ``defines``: which module defines the top-level function or class N;
* ``count``: how many distinct top-level functions module M defines (module
  level, conditional ones included, none inside classes or functions);
* ``override``: module M's class C defines method m: which class's m does it
  override (the nearest ancestor in C's single-inheritance chain within M).

The context depends on the installed Python (its version is in ``meta``);
for one installation an instance depends on its seed only.
"""

from __future__ import annotations

import random
import sys
from typing import Any, ClassVar

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.codeqa_source import (
    Module,
    header,
    load_module,
    overrides,
    stdlib_files,
    top_level_defs,
)
from polyrlm.plugins.bench.codeqa_strategies import CODE_READ
from polyrlm.plugins.bench.scoring import choice_score
from polyrlm.plugins.bench.strategy import MAP_REDUCE, Strategy
from polyrlm.plugins.bench.task import Instance, Task

__all__ = ["CODEQA_MAX_TOKENS", "CODEQA_MIN_MODULES", "CODEQA_MIN_TOKENS", "CodeqaTask"]

#: Smallest and largest contexts, in tokens (the library, as selected, holds ~2.4M).
CODEQA_MIN_TOKENS = 8_000
CODEQA_MAX_TOKENS = 2_000_000
#: Modules a context holds at least (four options need four modules).
CODEQA_MIN_MODULES = 4
#: How far the context may be from the requested size, as a fraction.
SIZE_TOLERANCE = 0.02
LETTERS = "ABCD"
_KINDS = ("defines", "count", "override")


def _select(rng: random.Random, chars: int) -> list[Module]:
    """A seeded subset of modules whose sections add up to ``chars`` characters
    (within ``SIZE_TOLERANCE``); no module over a quarter of it, so there are
    at least ``CODEQA_MIN_MODULES``."""
    files = list(stdlib_files())
    rng.shuffle(files)
    chosen: list[Module] = []
    total = 0
    for name, path, size in files:
        if total >= chars * (1 - SIZE_TOLERANCE):
            break
        if size > chars // CODEQA_MIN_MODULES or total + size > chars * (1 + SIZE_TOLERANCE):
            continue
        module = load_module(name, path)
        if module is not None:
            chosen.append(module)
            total += len(header(module)) + len(module.source) + 2
    if total < chars * (1 - SIZE_TOLERANCE):
        raise ConfigError(f"codeqa: the standard library here cannot fill {chars:,} characters")
    return sorted(chosen, key=lambda m: m.name)


def _options(rng: random.Random, right: str, others: list[str]) -> tuple[dict[str, str], str]:
    picked = [*rng.sample(sorted(set(others) - {right}), 3), right]
    rng.shuffle(picked)
    options = dict(zip(LETTERS, picked, strict=True))
    return options, next(k for k, v in options.items() if v == right)


def _ask(rng: random.Random, kind: str, modules: list[Module]) -> dict[str, Any] | None:
    """A question of ``kind``, or None when these modules have none."""
    names = [m.name for m in modules]
    if kind == "defines":
        owners: dict[str, list[str]] = {}
        for m in modules:
            for d in set(top_level_defs(m.tree)):
                owners.setdefault(d, []).append(m.name)
        unique = sorted(n for n, o in owners.items() if len(o) == 1 and not n.startswith("_"))
        if not unique:
            return None
        name = rng.choice(unique)
        options, letter = _options(rng, owners[name][0], names)
        return {
            "text": f"Which module defines the top-level function or class `{name}`?",
            "letter": letter, "options": options, "name": name, "module": owners[name][0],
        }  # fmt: skip
    if kind == "count":
        module = rng.choice(modules)
        n = len(set(top_level_defs(module.tree, functions_only=True)))
        near = [x for x in range(max(0, n - 6), n + 7) if x != n]
        options, letter = _options(rng, str(n), [str(x) for x in near])
        return {
            "text": f"How many distinct top-level functions does module `{module.name}` define "
            "(at module level, conditional definitions included, none inside classes or "
            "functions)?",
            "letter": letter, "options": options, "module": module.name,
        }  # fmt: skip
    cases = [(m, c, meth, base) for m in modules for c, meth, base in overrides(m.tree)]
    if not cases:
        return None
    module, cls, method, base = rng.choice(sorted(cases, key=lambda x: (x[0].name, x[1:])))
    classes = sorted({c for c in top_level_defs(module.tree, classes_only=True)} - {cls})
    if len(classes) < 4:  # the right one and three others
        return None
    options, letter = _options(rng, base, classes)
    return {
        "text": f"In module `{module.name}`, class `{cls}` defines method `{method}`. Which "
        f"class's `{method}` does it override (the nearest one up its chain of base classes)?",
        "letter": letter, "options": options, "module": module.name, "class": cls,
        "method": method,
    }  # fmt: skip


class CodeqaTask(Task):
    """Multiple choice about the installed Python standard library's source."""

    name: ClassVar[str] = "codeqa"
    description: ClassVar[str] = "multiple choice about the Python standard library's source"
    metric: ClassVar[str] = "accuracy (4 options)"
    default_sizes: ClassVar[tuple[int, ...]] = (32_768, 262_144)
    min_size: ClassVar[int] = CODEQA_MIN_TOKENS
    max_size: ClassVar[int] = CODEQA_MAX_TOKENS

    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        modules = _select(rng, size * CHARS_PER_TOKEN)
        kinds = list(_KINDS)
        rng.shuffle(kinds)
        asked = None
        for kind in kinds:
            asked = _ask(rng, kind, modules)
            if asked is not None:
                break
        if asked is None:
            raise ConfigError(f"codeqa: no question fits seed {seed} at {size:,} tokens")
        listed = "\n".join(f"{k}) {v}" for k, v in asked["options"].items())
        context = "\n".join(header(m) + "\n" + m.source for m in modules)
        return Instance(
            task=self.name,
            seed=seed,
            size=size,
            context=context,
            question=(
                "The context is the source of some modules of the Python standard library, "
                f"each under a header line '##### module NAME (file PATH) #####'. "
                f"{asked['text']}\n{listed}"
            ),
            expected=asked["letter"],
            params={
                "kind": kind,
                "name": asked.get("name"),
                "module": asked.get("module"),
                "class": asked.get("class"),
                "method": asked.get("method"),
                "options": asked["options"],
                "options_values": ", ".join(f"('{k}', '{v}')" for k, v in asked["options"].items()),
                "options_tsv": "\n".join(f"{k}\t{v}" for k, v in asked["options"].items()),
                "answer_format": "Reply with the option's letter only.",
            },
            meta={
                "python": sys.version.split()[0],
                "modules": [m.name for m in modules],
                "answer": asked["options"][asked["letter"]],
            },
        )

    def score(self, instance: Instance, answer: Any) -> float:
        return choice_score(answer, instance.expected, instance.params["options"])

    def strategies(self) -> dict[str, Strategy]:
        return {CODE_READ.name: CODE_READ, MAP_REDUCE.name: MAP_REDUCE}
