"""``multihop``: facts spread over many documents, answered by chaining two
or three of them (a small, synthetic BrowseComp-Plus).

An invented world (people, companies, cities, countries, languages; every
name invented, so no model knows the answer beforehand) is written as facts,
one sentence each, scattered over documents of filler prose::

    Kelimo Barato was born in the city of Denavi.
    The city of Denavi lies in the country of Tovasa.
    The official language of Tovasa is Relamo.

The question names a person and asks along a chain ("What is the official
language of the country where Kelimo Barato was born?"); the facts of the
chain sit in different documents, among the same facts about everyone else
and decoys about the same person ("Kelimo Barato once visited the city of
..."). The context is a list of documents; the score is exact match.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.plugins.bench.multihop_strategies import GREP_CHAIN, HOP_READ, HOP_READ_MAX_CHARS
from polyrlm.plugins.bench.scoring import exact_match
from polyrlm.plugins.bench.strategy import MAP_REDUCE, Strategy
from polyrlm.plugins.bench.task import Instance, Task
from polyrlm.plugins.bench.text import Filler, invented_name

__all__ = ["DOC_CHARS", "MULTIHOP_MAX_TOKENS", "MULTIHOP_MIN_TOKENS", "RELATIONS", "MultihopTask"]

#: Smallest and largest contexts, in tokens.
MULTIHOP_MIN_TOKENS = 2_000
MULTIHOP_MAX_TOKENS = 10_000_000
#: Characters of one document, about (filler plus its facts).
DOC_CHARS = 3_000
#: People per document: the world grows with the context.
PEOPLE_PER_DOC = 2

#: Relation -> (text before the subject, text between subject and object).
RELATIONS = {
    "born": ("", " was born in the city of "),
    "works": ("", " works for the company "),
    "city_country": ("The city of ", " lies in the country of "),
    "company_city": ("The company ", " has its headquarters in the city of "),
    "language": ("The official language of ", " is "),
}
#: Question templates by chain of relations; {p} is the person.
_CHAINS = {
    ("born", "city_country"): "In which country was {p} born?",
    ("works", "company_city"): "In which city does the company that {p} works for have its "
    "headquarters?",
    ("born", "city_country", "language"): "What is the official language of the country "
    "where {p} was born?",
    ("works", "company_city", "city_country"): "In which country does the company that {p} "
    "works for have its headquarters?",
}
#: One question per hop, for strategies that ask a sub-model hop by hop; {x} is the entity.
HOP_QUESTIONS = {
    "born": "In which city was {x} born?",
    "works": "Which company does {x} work for?",
    "city_country": "In which country does the city of {x} lie?",
    "company_city": "In which city does the company {x} have its headquarters?",
    "language": "What is the official language of {x}?",
}
_DECOYS = (
    "{p} once visited the city of {c}.",
    "A cousin of {p} was born in the city of {c}.",
    "{p} wrote a letter to the company {o}.",
)


def _names(rng: random.Random, count: int, taken: set[str], words: int = 1) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        name = " ".join(invented_name(rng) for _ in range(words))
        if name not in taken and all(w not in taken for w in name.split()):
            taken.update({name, *name.split()})
            out.append(name)
    return out


class MultihopTask(Task):
    """Two- and three-hop questions over facts scattered in documents."""

    name: ClassVar[str] = "multihop"
    description: ClassVar[str] = "chain 2-3 facts spread over documents with distractors; exact"
    metric: ClassVar[str] = "exact match"
    default_sizes: ClassVar[tuple[int, ...]] = (32_768, 262_144)
    min_size: ClassVar[int] = MULTIHOP_MIN_TOKENS
    max_size: ClassVar[int] = MULTIHOP_MAX_TOKENS

    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        chars = size * CHARS_PER_TOKEN
        docs = max(4, round(chars / DOC_CHARS))
        doc_chars = chars // docs
        taken: set[str] = set()
        people = _names(rng, docs * PEOPLE_PER_DOC, taken, words=2)
        countries = _names(rng, max(4, docs // 8), taken)
        languages = _names(rng, len(countries), taken)
        cities = _names(rng, max(6, docs // 2), taken)
        companies = _names(rng, max(6, docs // 2), taken)
        world = {
            "born": {p: rng.choice(cities) for p in people},
            "works": {p: rng.choice(companies) for p in people},
            "city_country": {c: rng.choice(countries) for c in cities},
            "company_city": {o: rng.choice(cities) for o in companies},
            "language": dict(zip(countries, languages, strict=True)),
        }
        chain = rng.choice(sorted(_CHAINS))
        person = rng.choice(people)
        entity = person
        path = [person]
        for relation in chain:
            entity = world[relation][entity]
            path.append(entity)
        facts: list[str] = []
        for relation, pairs in world.items():
            before, between = RELATIONS[relation]
            facts += [f"{before}{s}{between}{o}." for s, o in pairs.items()]
        facts += [
            d.format(p=person, c=rng.choice(cities), o=rng.choice(companies)) for d in _DECOYS
        ]
        rng.shuffle(facts)
        # Spread the facts over the documents: round robin after a shuffle puts
        # the chain's facts in different documents almost always.
        placed: list[list[str]] = [[] for _ in range(docs)]
        for i, fact in enumerate(facts):
            placed[i % docs].append(fact)
        rng.shuffle(placed)
        texts = []
        filler = Filler(rng)
        for own in placed:
            room = max(200, doc_chars - sum(len(f) + 1 for f in own))
            paragraphs = filler.paragraphs(room)
            for fact in own:
                paragraphs.insert(rng.randrange(len(paragraphs) + 1), fact)
            texts.append("\n".join(paragraphs))
        hops = [RELATIONS[r] for r in chain]
        return Instance(
            task=self.name,
            seed=seed,
            size=size,
            context=texts,
            question=_CHAINS[chain].format(p=person),
            expected=entity,
            params={
                "start": person,
                "hops": [list(h) for h in hops],
                "hops_values": ", ".join(
                    f"({i}, '{b}', '{a}')" for i, (b, a) in enumerate(hops, 1)
                ),
                "hops_bar": "\n".join(f"{b}|{a}" for b, a in hops),
                "hop_questions": [HOP_QUESTIONS[r] for r in chain],
                "hop_values": ", ".join(
                    f"({i}, '{HOP_QUESTIONS[r]}')" for i, r in enumerate(chain, 1)
                ),
                "max_chars": HOP_READ_MAX_CHARS,
                "answer_format": "Reply with the name only.",
            },
            meta={"documents": docs, "chain": list(chain), "path": path},
        )

    def score(self, instance: Instance, answer: Any) -> float:
        return exact_match(answer, instance.expected)

    def strategies(self) -> dict[str, Strategy]:
        return {GREP_CHAIN.name: GREP_CHAIN, HOP_READ.name: HOP_READ, MAP_REDUCE.name: MAP_REDUCE}
