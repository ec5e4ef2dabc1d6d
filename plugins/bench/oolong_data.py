"""The records of the OOLONG-style tasks: dated questions by user IDs.

Each record is one line, as in OOLONG's trec_coarse split::

    Date: Mar 14, 2023 || User: 48213 || Instance: What does NASA stand for?

The question's coarse type (TREC's six: abbreviation, description and
abstract concept, entity, human being, location, numeric value) is not
written anywhere; a model has to infer it from the question. The questions
come from templates per type filled from word lists, so the gold label of
every record is known.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import re
import string
from dataclasses import dataclass

from polyrlm.plugins.bench.text import word_list

__all__ = [
    "DATE_FORMAT",
    "FIRST_DAY",
    "LABELS",
    "LABEL_ALIASES",
    "RECORD_PATTERN",
    "SPAN_DAYS",
    "Record",
    "canonical_label",
    "label_of_question",
    "make_records",
    "record_line",
]

#: TREC coarse labels, as OOLONG names them.
LABELS = (
    "abbreviation",
    "description and abstract concept",
    "entity",
    "human being",
    "location",
    "numeric value",
)
#: Short forms a reply may use for a label.
LABEL_ALIASES = {
    "abbr": "abbreviation",
    "abbreviation": "abbreviation",
    "desc": "description and abstract concept",
    "description": "description and abstract concept",
    "abstract concept": "description and abstract concept",
    "enty": "entity",
    "entity": "entity",
    "hum": "human being",
    "human": "human being",
    "person": "human being",
    "loc": "location",
    "location": "location",
    "num": "numeric value",
    "numeric": "numeric value",
    "number": "numeric value",
}
#: How dates are written in records (``Mar 14, 2023``).
DATE_FORMAT = "%b %d, %Y"
#: First date a record may carry, and how many days the dates span.
FIRST_DAY = dt.date(2022, 10, 1)
SPAN_DAYS = 365
#: A record line, parsed: date, user, question.
RECORD_PATTERN = re.compile(r"^Date: (.+?) \|\| User: (\d+) \|\| Instance: (.*)$")

_W = {
    "acronym": word_list(
        "NASA UNESCO NATO FIFA OPEC WHO IMF ASCII HTML GPS RADAR LASER SCUBA DNA UNICEF CERN "
        "IBM BBC MRI PDF"
    ),
    "org": word_list(
        "the United Nations|the World Bank|the European Space Agency|the Red Cross|"
        "the International Olympic Committee|the Federal Reserve",
        "|",
    ),
    "concept": word_list(
        "democracy|inflation|photosynthesis|entropy|irony|a black hole|jazz|the placebo effect|"
        "stoicism|a tariff|osmosis|nostalgia|a sonnet|recursion",
        "|",
    ),
    "thing": word_list(
        "a compass|a steam engine|a vaccine|a barometer|the internet|a refrigerator|"
        "a telescope|a printing press|a battery|a thermostat",
        "|",
    ),
    "animal": ["animal", "bird", "fish", "insect", "reptile"],
    "category": word_list(
        "fruit|flower|musical instrument|gemstone|dog breed|sport|dance|fabric|spice|board game",
        "|",
    ),
    "trait": word_list(
        "is red|grows in deserts|is used in weddings|has the longest lifespan|"
        "is the national symbol of a country|was popular in the 1920s",
        "|",
    ),
    "role": ["president", "emperor", "astronaut", "prime minister", "chess champion", "explorer"],
    "country": word_list(
        "Peru Norway Kenya Japan Chile Egypt Canada Portugal Nepal Ghana Iceland Vietnam"
    ),
    "work": word_list(
        "the Iliad|Don Quixote|the Ninth Symphony|the Mona Lisa|Hamlet|Moby Dick|"
        "the Starry Night|War and Peace",
        "|",
    ),
    "landmark": word_list(
        "the Eiffel Tower|Machu Picchu|the Great Barrier Reef|Mount Kilimanjaro|the Alhambra|"
        "Angkor Wat|the Acropolis|Lake Titicaca",
        "|",
    ),
    "event": word_list(
        "the first moon landing|the fall of the Berlin Wall|the French Revolution|"
        "the invention of the telephone|the first Olympic Games",
        "|",
    ),
    "measure": ["tall", "deep", "long", "heavy", "old", "far from the sun"],
    "body": word_list(
        "Mount Everest|the Pacific Ocean|the Nile|a blue whale|the Moon|Jupiter", "|"
    ),
}

_TEMPLATES = {
    "abbreviation": (
        "What does {acronym} stand for?",
        "What is the full form of {acronym}?",
        "What is the abbreviation for {org}?",
        "What is {acronym} short for?",
    ),
    "description and abstract concept": (
        "What is {concept}?",
        "How does {thing} work?",
        "Why is {concept} important?",
        "What is the meaning of {concept}?",
        "What is the difference between {concept} and {concept2}?",
    ),
    "entity": (
        "What {category} {trait}?",
        "Which {animal} {trait}?",
        "What is the name of the {category} that {trait}?",
        "What kind of {animal} lives in {country}?",
    ),
    "human being": (
        "Who invented {thing}?",
        "Who was the first {role} of {country}?",
        "Who wrote {work}?",
        "Who created {work}?",
        "What is the name of the {role} who visited {landmark}?",
    ),
    "location": (
        "Where is {landmark}?",
        "What country borders {country}?",
        "In which city is {landmark}?",
        "Where was {thing} first built?",
        "What is the capital of {country}?",
    ),
    "numeric value": (
        "How {measure} is {body}?",
        "When did {event} happen?",
        "How many people live in {country}?",
        "In what year did {event} take place?",
        "How much did {thing} cost in 1900?",
    ),
}


@dataclass(frozen=True)
class Record:
    """One dated question by one user, with its gold label."""

    date: dt.date
    user: int
    question: str
    label: str


def record_line(record: Record) -> str:
    return (
        f"Date: {record.date.strftime(DATE_FORMAT)} || User: {record.user} "
        f"|| Instance: {record.question}"
    )


def _question(rng: random.Random, label: str) -> str:
    template = rng.choice(_TEMPLATES[label])
    fills = {key: rng.choice(words) for key, words in _W.items()}
    fills["concept2"] = rng.choice([c for c in _W["concept"] if c != fills["concept"]])
    return template.format(**fills)


@functools.cache
def _template_patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    fills = {**_W, "concept2": _W["concept"]}
    out = []
    for label, templates in _TEMPLATES.items():
        for template in templates:
            pattern = ""
            for literal, field, _, _ in string.Formatter().parse(template):
                pattern += re.escape(literal)
                if field:
                    pattern += "(?:" + "|".join(re.escape(w) for w in fills[field]) + ")"
            out.append((re.compile(pattern + "$"), label))
    return tuple(out)


def label_of_question(question: str) -> str | None:
    """The label of a generated question, read back from the templates (for
    tests and oracles: every generated question matches exactly one label)."""
    labels = {label for pattern, label in _template_patterns() if pattern.match(question)}
    return labels.pop() if len(labels) == 1 else None


def make_records(rng: random.Random, chars: int, users: int) -> list[Record]:
    """Records until their lines (with newlines) reach ``chars`` characters,
    by ``users`` distinct 5-digit user IDs, in date order."""
    ids = rng.sample(range(10_000, 100_000), users)
    out: list[Record] = []
    total = 0
    while total < chars:
        label = rng.choice(LABELS)
        day = FIRST_DAY + dt.timedelta(days=rng.randrange(SPAN_DAYS))
        record = Record(day, rng.choice(ids), _question(rng, label), label)
        out.append(record)
        total += len(record_line(record)) + 1
    out.sort(key=lambda r: r.date)  # stable: same-day records keep their draw order
    return out


def canonical_label(text: str) -> str | None:
    """The label a short reply names (``'Location.'``, ``'the label: HUM'``
    -> the canonical name), or None when it names none exactly."""
    words = re.sub(r"[^a-z ]", " ", text.lower()).split()
    while words and words[0] in {"the", "label", "type", "answer", "is", "a"}:
        words = words[1:]
    joined = " ".join(words)
    return joined if joined in LABELS else LABEL_ALIASES.get(joined)
