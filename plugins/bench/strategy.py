"""Strategies: scripted root programs that stand in for the root model.

A strategy is a list of code blocks per language (``python`` for
python-inline, python and wasm; ``sql``; ``bash``), replayed through the real
loop by a :class:`~polyrlm.testing.scripted.ScriptedModel`, one block per
root turn. It needs no root model, so it is an offline baseline; strategies
that call ``llm_batch`` / ``llm`` need a sub-model. A backend that lands gets
a strategy by adding its language's code to the strategy's ``code`` dict.

Blocks are templates: ``<<name>>`` is replaced by the instance parameter
``name`` written as a literal of the block's language (a Python ``repr``, a
SQL string, a shell word); ``<<name:raw>>`` inserts it as it is (numbers,
identifiers and code fragments the task itself generated).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from polyrlm.errors import ConfigError

__all__ = [
    "MAP_CHUNK_CHARS",
    "MAP_REDUCE",
    "MAP_REDUCE_CODE",
    "Strategy",
    "literal",
    "render",
]

#: Characters of context per sub-model prompt in map steps (the paper's advice: ~100K).
MAP_CHUNK_CHARS = 100_000

_PLACEHOLDER = re.compile(r"<<(\w+)(:raw)?>>")


def literal(language: str, value: Any) -> str:
    """``value`` written as a literal of ``language``."""
    if language == "python":
        return repr(value)
    if isinstance(value, bool) or value is None:
        if language == "sql":
            return {True: "TRUE", False: "FALSE", None: "NULL"}[value]
        return "" if value is None else str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if not isinstance(value, str):
        raise ConfigError(f"no {language} literal for a {type(value).__name__}: {value!r}")
    if language == "sql":
        return "'" + value.replace("'", "''") + "'"
    if language == "bash":
        return shlex.quote(value)
    raise ConfigError(f"no literal syntax known for language {language!r}")


def render(template: str, language: str, params: Mapping[str, Any]) -> str:
    """Fill the ``<<name>>`` placeholders of ``template`` from ``params``."""

    def fill(match: re.Match[str]) -> str:
        name, raw = match.group(1), match.group(2)
        if name not in params:
            raise ConfigError(f"strategy block needs parameter {name!r}, not given")
        value = params[name]
        return str(value) if raw else literal(language, value)

    return _PLACEHOLDER.sub(fill, template)


@dataclass(frozen=True)
class Strategy:
    """A scripted root program, in one or more languages."""

    name: str
    description: str
    #: Language -> code blocks (templates), one per root turn.
    code: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: True when the blocks call the sub-model (``llm_batch``, ``llm``).
    needs_sub_model: bool = False
    #: Shown beside the score, e.g. that a baseline knows the needle's form.
    note: str = ""
    #: Parameters of the strategy's own (its limits), under the instance's.
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def blocks(self, language: str, params: Mapping[str, Any]) -> list[str]:
        """The blocks for ``language``, filled in; ConfigError when it has none."""
        if language not in self.code:
            raise ConfigError(f"strategy {self.name!r} has no {language} code")
        filled = {**self.defaults, **params}
        return [render(block, language, filled) for block in self.code[language]]


#: Generic partition + map + reduce, for every task: each chunk of about
#: ``chunk_chars`` characters goes to the sub-model with the question (the
#: map, concurrent), the useful notes go to one more call that answers (the reduce).
MAP_REDUCE_CODE: dict[str, tuple[str, ...]] = {
    "python": (
        """\
text = context if isinstance(context, str) else "\\n\\n".join(context)
size = <<chunk_chars:raw>>
chunks = [text[i:i + size] for i in range(0, len(text), size)]
ask = ("Question: " + <<question>> + "\\nFrom the text below, note tersely every fact "
       "that helps answer the question; reply NONE if nothing does.\\n\\n")
notes = llm_batch([ask + c for c in chunks])
useful = [n for n in notes
          if n.strip() and n.strip().upper() != "NONE" and not isinstance(n, SubCallFailure)]
print(len(chunks), "chunks,", len(useful), "with notes")""",
        """\
reply = llm_query("Question: " + <<question>> + "\\nAnswer it from these notes, taken from "
                  "consecutive parts of a long text. " + <<answer_format>> + "\\n\\n"
                  + "\\n---\\n".join(useful))
FINAL(reply.strip())""",
    ),
    "sql": (
        """\
CREATE TABLE chunks AS
SELECT chunk, string_agg(text, chr(10) ORDER BY <<order_col:raw>>) AS body
FROM (SELECT <<order_col:raw>>, text,
             sum(length(text) + 1) OVER (ORDER BY <<order_col:raw>>) // <<chunk_chars:raw>> AS chunk
      FROM context)
GROUP BY chunk;
CREATE TABLE notes AS
SELECT chunk, llm('Question: ' || <<question>> || chr(10) || 'From the text below, note tersely '
       || 'every fact that helps answer the question; reply NONE if nothing does.'
       || chr(10) || chr(10) || body) AS note
FROM chunks;
SELECT count(*) AS chunks,
       count(*) FILTER (WHERE note IS NOT NULL AND upper(trim(note)) <> 'NONE') AS with_notes
FROM notes;""",
        """\
SELECT final(trim(llm('Question: ' || <<question>> || chr(10) || 'Answer it from these notes, '
       || 'taken from consecutive parts of a long text. ' || <<answer_format>> || chr(10)
       || chr(10) || coalesce(string_agg(note, chr(10) || '---' || chr(10) ORDER BY chunk), ''))))
FROM notes WHERE note IS NOT NULL AND upper(trim(note)) <> 'NONE';""",
    ),
    "bash": (
        """\
q=<<question>>
mkdir -p mr && rm -f mr/chunk_*
if [ -d "$CONTEXT" ]; then
  for f in "$CONTEXT"/*; do cat "$f"; printf '\\n\\n'; done
else
  cat "$CONTEXT"
fi | split -C <<chunk_chars:raw>> - mr/chunk_
to_json -p "Question: $q
From the text below, note tersely every fact that helps answer the question; reply NONE if \\
nothing does." mr/chunk_* | llm_batch > mr/notes.jsonl
echo "$(ls mr/chunk_* | wc -l) chunks"
""",
        """\
from_json < mr/notes.jsonl | grep -v -i -x '[[:space:]]*none[[:space:]]*' > mr/useful.txt
llm "Question: $q
Answer it from these notes, taken from consecutive parts of a long text. "<<answer_format>> \\
  < mr/useful.txt | final""",
    ),
}

MAP_REDUCE = Strategy(
    name="map-reduce",
    description="partition the context, llm_batch the question over the chunks, reduce the "
    "notes with one more call",
    code=MAP_REDUCE_CODE,
    needs_sub_model=True,
)
