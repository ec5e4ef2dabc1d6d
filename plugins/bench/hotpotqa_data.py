"""HotpotQA as RULER ships it, parsed once per process.

The file (:data:`~polyrlm.plugins.bench.packaged.HOTPOTQA`) is HotpotQA's
distractor dev set: a JSON list of 7,405 questions, each with its answer,
its supporting facts (``[title, sentence index]`` pairs naming the two gold
paragraphs) and its own ten paragraphs (``[title, [sentences]]``: the two
gold ones and eight distractors HotpotQA retrieved for it).

As RULER's ``read_hotpotqa`` does, a paragraph is its title, a newline and
its sentences joined (they carry their own leading spaces), and the pool of
documents is every distinct such text, sorted, so its indices do not depend
on the file's order. The file is read only once :func:`packaged_path` has
checked its version, size and SHA-256.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.packaged import HOTPOTQA, PackagedFile, packaged_path

__all__ = [
    "DOCUMENT_TEMPLATE",
    "RULER_ANSWER_FORMAT",
    "RULER_INSTRUCTION",
    "HotpotData",
    "HotpotQuestion",
    "document_header_chars",
    "hotpotqa_data",
]

#: RULER's document template (``qa.py``), numbered from 1 in context order.
DOCUMENT_TEMPLATE = "Document {i}:\n{document}"
#: RULER's QA instruction (``constants.py``, task ``qa``), said before and after the documents.
RULER_INSTRUCTION = (
    "Answer the question based on the given documents. "
    "Only give me the answer and do not output any other words."
)
#: The second sentence of the instruction alone: the answer format of the ``rlm`` method.
RULER_ANSWER_FORMAT = "Only give me the answer and do not output any other words."


@dataclass(frozen=True)
class HotpotQuestion:
    """One HotpotQA question, its paragraphs as indices into the pool."""

    id: str
    question: str
    answer: str
    #: ``bridge`` or ``comparison`` (HotpotQA's question types).
    type: str
    level: str
    #: Its own paragraphs (gold and HotpotQA's distractors), in the file's order.
    own: tuple[int, ...]
    #: The gold paragraphs: those its supporting facts name.
    gold: tuple[int, ...]
    #: Titles of its own paragraphs: no distractor from elsewhere may share one.
    titles: frozenset[str]
    #: Characters of its own paragraphs, without the document headers.
    own_chars: int


@dataclass(frozen=True)
class HotpotData:
    """The questions and the pool of distinct paragraphs."""

    questions: tuple[HotpotQuestion, ...]
    #: Every distinct paragraph text (``title\\ntext``), sorted.
    paragraphs: tuple[str, ...]
    #: The title of each paragraph of the pool.
    titles: tuple[str, ...]

    @property
    def pool_chars(self) -> int:
        """Characters of every paragraph of the pool, without headers."""
        return sum(len(p) for p in self.paragraphs)


def document_header_chars(number: int) -> int:
    """Characters the document template adds to document ``number`` (from 1)."""
    return len(DOCUMENT_TEMPLATE.format(i=number, document=""))


def _paragraph(title: str, sentences: list[str]) -> str:
    return f"{title}\n{''.join(sentences)}"


@functools.cache
def _parse(path: Path, sha256: str) -> HotpotData:
    # Keyed by the digest too: a different pin of the same path is parsed anew.
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        texts = sorted({_paragraph(t, s) for item in raw for t, s in item["context"]})
        index = {text: i for i, text in enumerate(texts)}
        questions = []
        for item in raw:
            own = tuple(index[_paragraph(t, s)] for t, s in item["context"])
            gold_titles = {title for title, _ in item["supporting_facts"]}
            gold = tuple(
                i
                for (title, _), i in zip(item["context"], own, strict=True)
                if title in gold_titles
            )
            questions.append(
                HotpotQuestion(
                    id=item["_id"],
                    question=item["question"],
                    answer=item["answer"],
                    type=item["type"],
                    level=item["level"],
                    own=own,
                    gold=gold,
                    titles=frozenset(title for title, _ in item["context"]),
                    own_chars=sum(len(texts[i]) for i in own),
                )
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not HotpotQA as RULER ships it: {exc!r}") from None
    return HotpotData(
        questions=tuple(questions),
        paragraphs=tuple(texts),
        titles=tuple(text.split("\n", 1)[0] for text in texts),
    )


def hotpotqa_data(pinned: PackagedFile = HOTPOTQA) -> HotpotData:
    """The parsed file, once :func:`packaged_path` has checked it (every call:
    the check is cached by the file's size and mtime, the parse by its path)."""
    path = packaged_path(pinned)
    return _parse(path, pinned.sha256)
