"""The guide's parts for a typed answer and for the user's tools, in SQL:
the answer's type as a DuckDB type, each tool as a DuckDB signature. Both
are made from the JSON Schemas alone, so a replay shows the same text."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from polyrlm.answers import AnswerType
from polyrlm.backends.sql.guide import GUIDE_WIDTH
from polyrlm.backends.sql.tools import SqlTool
from polyrlm.backends.sql.types import duckdb_type, skeleton
from polyrlm.schema_text import compact_json
from polyrlm.tools import Tool

__all__ = ["lean", "sql_answer_guide", "sql_tools_guide"]

_CHECKED = (
    "The host checks the answer against this JSON Schema: {schema}\n"
    "An answer that does not validate comes back to you with the errors; set it again."
)

_TEXT_ANSWER = """\
## The answer's type
The answer is text (VARCHAR): SELECT final(<a VARCHAR>) on one row.
"""

_TYPED_ANSWER = """\
## The answer's type
Set the answer with final() on one row, to a DuckDB value of this type (final() turns it
into JSON: a STRUCT becomes an object, a LIST an array, a MAP an object):
    {type}
Build a STRUCT with {{'key': value}} or struct_pack(key := value), a list with [a, b] or
list(x ORDER BY y), e.g. (fill in every ...):
    SELECT final({skeleton}) FROM ...;
final(<JSON text>) works too: a VARCHAR (or JSON) holding JSON of that shape.
{checked}
"""

_TOOLS = """\
## Your tools
Functions of the user, callable in any SQL expression; they run on the host, not in
DuckDB. Vectorised like llm(): the rows of a chunk (up to 2,048) go to the host as one
batch and run concurrently. NULL in a required argument gives NULL with no call; an
optional argument (`:= default`) may be left out or NULL: the tool's default applies. A
failed call fails the statement with the tool's error. Types: BIGINT, DOUBLE, VARCHAR,
BOOLEAN; JSON is JSON text (a VARCHAR): pass JSON text or any value (a STRUCT, a LIST: it
is made JSON with to_json), and read a JSON result with ->> or json_extract_string(x,
'$.key'), or CAST it to a DuckDB type.
{listed}
"""


def lean(schema: Any) -> Any:
    """``schema`` without pydantic's titles (they restate the names), for a prompt."""
    if isinstance(schema, list):
        return [lean(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: lean(sub) for name, sub in value.items()}
        else:
            out[key] = lean(value)
    return out


def sql_answer_guide(answer_type: AnswerType) -> str:
    """How to set an answer of ``answer_type`` with ``final()``."""
    if answer_type.is_text:
        return _TEXT_ANSWER
    schema = answer_type.schema
    return _TYPED_ANSWER.format(
        type=duckdb_type(schema),
        skeleton=skeleton(schema),
        checked=_CHECKED.format(schema=compact_json(lean(schema))),
    )


def _entry(t: SqlTool) -> str:
    head = f"- `{t.signature()}`"
    if t.description:
        head += ": " + " ".join(t.description.split())
    lines = [textwrap.fill(head, width=GUIDE_WIDTH, subsequent_indent="  ")]
    lines += [f"  JSON of {name}: {compact_json(lean(schema))}" for name, schema in t.json_notes()]
    return "\n".join(lines)


def sql_tools_guide(tools: Sequence[Tool]) -> str:
    """Each tool as a DuckDB signature with its description."""
    listed = "\n".join(_entry(SqlTool.of(t.record())) for t in tools)
    return _TOOLS.format(listed=listed)
