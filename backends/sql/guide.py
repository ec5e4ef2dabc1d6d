"""The prompt guide of the sql backend, generated from what the environment
really offers: the functions it registered and the live schema (tables,
columns, types, row counts, a few first rows)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from polyrlm.backends.sql.functions import FUNCTIONS
from polyrlm.backends.sql.render import CELL_CHARS, ROWS_HEAD, ROWS_TAIL, Collected, format_rows
from polyrlm.backends.sql.runner import REFUSED_SHOWN
from polyrlm.backends.sql.schema import TableInfo

__all__ = [
    "GUIDE_MAX_COLUMNS",
    "GUIDE_MAX_TABLES",
    "GUIDE_WIDTH",
    "SAMPLED_TABLES",
    "SAMPLE_CELL_CHARS",
    "SAMPLE_ROWS",
    "Target",
    "sql_compact_guide",
    "sql_guide",
]

#: Tables listed with their columns in the guide (the rest by name only).
GUIDE_MAX_TABLES = 30
#: Columns listed per table in the guide.
GUIDE_MAX_COLUMNS = 40
#: First rows shown per sampled table.
SAMPLE_ROWS = 3
#: Context tables whose first rows the guide shows.
SAMPLED_TABLES = 5
#: Characters per cell in those first rows.
SAMPLE_CELL_CHARS = 80
#: Characters per line of the guide's prose.
GUIDE_WIDTH = 92

_HEAD = """\
## Your environment: DuckDB SQL ({flavour})

Write DuckDB SQL in ```sql blocks; one block per reply is best. A block may hold several
statements separated by `;`; they run in order and only the last one's result comes back:
at most {shown} rows (the first {head} and the last {tail}), cells cut at {cell} characters,
but a single value (one row, one column) is shown whole. Tables you create persist between
blocks: keep large intermediate results in tables and look at counts and samples.

The context is read-only: its tables and the functions below cannot be changed or dropped
(build on them: CREATE TABLE name AS SELECT ...; your tables go to the main schema, and one
named like a context table hides it: the context stays at ctx.<name>). No file besides the
context can be read or written; these statements are refused:
{refused}.
A block may run {timeout:g} s; a statement still running then is interrupted (tables made
before it are kept).

Functions:
{functions}
"""

_TEXT_NOTE = (
    "A text context has one row per line, split at every newline: line_no counts from 1 and a "
    "final newline gives a last, empty line, so string_agg(text, chr(10) ORDER BY line_no) is "
    "the whole text and sum(length(text)) + count(*) - 1 its length in characters."
)
_DOCS_NOTE = "A list of documents has one row per document: doc_id is its index, from 0."

_EXAMPLES = """\
Examples (on {table}; adapt the names to the schema):
```sql
-- peek
SELECT * FROM {table} LIMIT 5;
```
```sql
-- size
SELECT count(*) AS rows, sum(length({text})) AS chars FROM {table};
```
```sql
-- search: LIKE / ILIKE for words, regexp_matches and regexp_extract for patterns
SELECT {order}, {text} FROM {table} WHERE {text} ILIKE '%refund%' LIMIT 20;
SELECT {order}, regexp_extract({text}, '\\d{{4}}-\\d{{2}}-\\d{{2}}') AS day
FROM {table} WHERE regexp_matches({text}, '\\d{{4}}-\\d{{2}}-\\d{{2}}');
```
```sql
-- partition into 20 chunks of consecutive rows (or fixed sizes:
-- (row_number() OVER (ORDER BY {order}) - 1) // 500 AS chunk)
CREATE TABLE chunks AS
SELECT chunk, string_agg({text}, chr(10) ORDER BY {order}) AS body
FROM (SELECT {order}, {text}, ntile(20) OVER (ORDER BY {order}) AS chunk FROM {table})
GROUP BY chunk;
```
```sql
-- map llm() over the rows (they run concurrently), keep the replies in a table
CREATE TABLE found AS
SELECT chunk, llm('List every date in this text, one per line, or NONE:' || chr(10) || body)
    AS reply
FROM chunks;
SELECT chunk, reply FROM found WHERE reply <> 'NONE' ORDER BY chunk;
```
```sql
-- reduce, and answer (final() on exactly one row)
SELECT final(string_agg(reply, chr(10) ORDER BY chunk)) FROM found WHERE reply <> 'NONE';
```
"""


class Target:
    """The table, ordering column and text column the examples use."""

    def __init__(self, tables: Sequence[TableInfo]) -> None:
        self.table, self.order, self.text = "context", "line_no", "text"
        for t in tables:
            if t.source is None or not t.columns:
                continue
            names = [c for c, _ in t.columns]
            texts = [c for c, dtype in t.columns if dtype == "VARCHAR"]
            if not texts:
                continue
            self.table = t.name
            self.text = "text" if "text" in names else texts[0]
            ordered = [c for c in ("line_no", "doc_id") if c in names]
            self.order = ordered[0] if ordered else names[0]
            return


def _describe(table: TableInfo) -> str:
    rows = "rows not counted" if table.rows is None else f"{table.rows:,} rows"
    head = f"- {table.name} ({table.kind}, {rows})"
    if table.source is not None:
        head += f": {table.source.origin}"
    cols = [f"{c} {dtype}" for c, dtype in table.columns[:GUIDE_MAX_COLUMNS]]
    more = len(table.columns) - GUIDE_MAX_COLUMNS
    if more > 0:
        cols.append(f"... {more} more (DESCRIBE {table.name})")
    return head + "\n  columns: " + (", ".join(cols) or "none")


def _sample(sample: Collected) -> str:
    text, _ = format_rows(sample.names, sample.numeric, sample.head, SAMPLE_CELL_CHARS)
    return "  first rows:\n" + "\n".join("    " + line for line in text.splitlines())


def sql_guide(
    *,
    flavour: str,
    timeout_s: float,
    tables: Sequence[TableInfo],
    samples: dict[str, Collected],
    databases: Sequence[str],
) -> str:
    """The whole guide; ``samples`` maps a table's name to its first rows."""
    functions = "\n".join(
        textwrap.fill(  # signatures are never split across lines (hence the \0)
            f"- {', '.join('`' + s.replace(' ', chr(0)) + '`' for s in f.signatures)}: {f.doc}",
            width=GUIDE_WIDTH,
            subsequent_indent="  ",
        ).replace(chr(0), " ")
        for f in FUNCTIONS
    )
    parts = [
        _HEAD.format(
            flavour=flavour,
            shown=ROWS_HEAD + ROWS_TAIL,
            head=ROWS_HEAD,
            tail=ROWS_TAIL,
            cell=CELL_CHARS,
            refused=REFUSED_SHOWN,
            timeout=timeout_s,
            functions=functions,
        )
    ]
    kinds = {t.source.kind for t in tables if t.source is not None}
    notes = [_TEXT_NOTE] * ("text" in kinds) + [_DOCS_NOTE] * ("documents" in kinds)
    listed = []
    for table in tables[:GUIDE_MAX_TABLES]:
        entry = _describe(table)
        if table.name in samples:
            entry += "\n" + _sample(samples[table.name])
        listed.append(entry)
    rest = tables[GUIDE_MAX_TABLES:]
    if rest:
        listed.append(f"- ... and {len(rest)} more: " + ", ".join(t.name for t in rest))
    header = "Tables and views now (the context first):"
    if databases:
        header += (
            " database contexts are attached read-only as catalogs "
            f"({', '.join(databases)}); their main tables also resolve unqualified."
        )
    parts.append(header)
    parts.append("\n".join(listed) if listed else "- none: the context is empty")
    parts += [textwrap.fill(note, width=GUIDE_WIDTH) for note in notes]
    parts.append("")
    target = Target(tables)
    parts.append(_EXAMPLES.format(table=target.table, order=target.order, text=target.text))
    return "\n".join(parts)


# The compact profile's guide; its example's only literal is a placeholder.
_COMPACT = """\
## The environment: DuckDB SQL ({flavour})
Write DuckDB SQL in a ```sql block; the rows of its last statement are shown to you. Tables
you create persist between replies.
{tables}
- `llm(prompt)`: a sub-model's reply to `prompt` (a VARCHAR; include the text it must read).
- `final(value)`: sets your answer and ends the run: `SELECT final(...)` giving one row.
Show the rows where a word occurs (put the word in place of WORD):
```sql
SELECT {order}, {text} FROM {table} WHERE {text} ILIKE '%WORD%' LIMIT 3;
```
"""


def sql_compact_guide(*, flavour: str, tables: Sequence[TableInfo]) -> str:
    """The compact profile's guide: the context tables on a line each."""
    lines = []
    for t in [t for t in tables if t.source is not None][:GUIDE_MAX_TABLES]:
        rows = "" if t.rows is None else f": {t.rows:,} rows"
        columns = ", ".join(f"{c} {dtype}" for c, dtype in t.columns[:GUIDE_MAX_COLUMNS])
        lines.append(f"- table {t.name}({columns}){rows}, the input")
    target = Target(tables)
    return _COMPACT.format(
        flavour=flavour,
        tables="\n".join(lines) or "- no tables: the input is empty",
        table=target.table,
        order=target.order,
        text=target.text,
    )
