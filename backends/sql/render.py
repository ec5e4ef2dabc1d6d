"""Query results as compact plain-text tables.

A result is streamed in Arrow batches, so a query of millions of rows never
sits in memory: the first :data:`ROWS_HEAD` and last :data:`ROWS_TAIL` rows
are kept and the rest only counted. Cells are cut at :data:`CELL_CHARS`
(newlines shown as ``\\n``), at :data:`FEW_ROWS_CELL_CHARS` in a result of
at most :data:`FEW_ROWS` rows (a search's few hits are read whole), and a
single value is shown whole, as it is (so a model can read a chunk of text
it selected).

No cell becomes a Python object bigger than what can be shown: strings and
blobs are cut inside Arrow first (to ``CELL_CHARS`` + 1 characters, or to
the capture limit for the first value of a one-column result, so a cut still
shows as one), and a nested value (list, struct, map) larger than
:data:`NESTED_CELL_MAX_BYTES` is shown as its size. A ``SELECT repeat('x',
2e9)`` result is thus never copied whole out of DuckDB's Arrow buffers.
"""

from __future__ import annotations

import importlib
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "CELL_CHARS",
    "FETCH_BATCH_ROWS",
    "FEW_ROWS",
    "FEW_ROWS_CELL_CHARS",
    "NESTED_CELL_MAX_BYTES",
    "ROWS_HEAD",
    "ROWS_TAIL",
    "Collected",
    "cap",
    "collect",
    "collect_rows",
    "format_cell",
    "format_result",
    "format_rows",
    "stream",
]

#: Rows shown from the start of a result.
ROWS_HEAD = 30
#: Rows shown from the end of a result (when it has more than ROWS_HEAD + ROWS_TAIL).
ROWS_TAIL = 10
#: Characters a cell shows in a result of more than one value.
CELL_CHARS = 200
#: A result of at most this many rows shows its cells up to FEW_ROWS_CELL_CHARS:
#: the line a search found is seen whole, not cut before the part that matched.
FEW_ROWS = 5
#: Characters a cell shows in a result of at most FEW_ROWS rows.
FEW_ROWS_CELL_CHARS = 2_000
#: Rows per Arrow batch when a result is streamed.
FETCH_BATCH_ROWS = 10_000
#: Bytes of a nested or binary-view cell (list, struct, map) turned into
#: Python at most; a larger one is shown as its size (it would be cut anyway).
NESTED_CELL_MAX_BYTES = 64 * 1024

_DML_VERBS = {
    "INSERT": "inserted",
    "UPDATE": "updated",
    "DELETE": "deleted",
    "MERGE_INTO": "changed",
    "CREATE": "written",
}


@dataclass
class Collected:
    """What is kept of a streamed result."""

    names: list[str]
    numeric: list[bool]
    head: list[tuple[Any, ...]] = field(default_factory=list)
    tail: deque[tuple[Any, ...]] = field(default_factory=lambda: deque(maxlen=ROWS_TAIL))
    total: int = 0
    #: Characters of the first value left in DuckDB (past the capture limit).
    first_cut: int = 0


def _too_large(kind: Any, size: int) -> str:
    return f"<{kind} of {size:,} bytes: too large to show; select a part of it>"


def _values(column: Any, chars: int) -> list[Any]:
    """A column slice as Python values, none longer than ``chars`` + 1
    characters (strings, blobs) or :data:`NESTED_CELL_MAX_BYTES` (others)."""
    pa = importlib.import_module("pyarrow")
    pc = importlib.import_module("pyarrow.compute")
    kind = column.type
    if pa.types.is_dictionary(kind):  # an ENUM: its values may be long too
        return _values(column.dictionary_decode(), chars)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return list(pc.utf8_slice_codeunits(column, 0, chars + 1).to_pylist())
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return list(pc.binary_slice(column, 0, chars + 1).to_pylist())
    if not (pa.types.is_nested(kind) or pa.types.is_string_view(kind)):
        return list(column.to_pylist())  # fixed-width values: small
    most = max(NESTED_CELL_MAX_BYTES, 8 * chars)
    out: list[Any] = []
    for i in range(len(column)):
        cell = column.slice(i, 1)
        out.append(cell.to_pylist()[0] if cell.nbytes <= most else _too_large(kind, cell.nbytes))
    return out


def _rows(batch: Any, start: int, stop: int, chars: int = CELL_CHARS) -> list[tuple[Any, ...]]:
    # Column by column: a result may have two columns of the same name.
    columns = [
        _values(batch.column(i).slice(start, stop - start), chars) for i in range(batch.num_columns)
    ]
    return list(zip(*columns, strict=True))


def _chars(column: Any) -> int:
    """The length in characters (bytes for a blob) of a column's first value."""
    pa = importlib.import_module("pyarrow")
    pc = importlib.import_module("pyarrow.compute")
    first = column.slice(0, 1)
    if pa.types.is_string(first.type) or pa.types.is_large_string(first.type):
        return int(pc.utf8_length(first)[0].as_py() or 0)
    if pa.types.is_binary(first.type) or pa.types.is_large_binary(first.type):
        return int(pc.binary_length(first)[0].as_py() or 0)
    return 0


def stream(relation: Any) -> Any:
    """An Arrow record batch reader over a DuckDB relation's result (runs it)."""
    reader = getattr(relation, "to_arrow_reader", None)  # DuckDB >= 1.4
    if reader is None:
        reader = relation.fetch_arrow_reader
    return reader(FETCH_BATCH_ROWS)


def collect(reader: Any, value_chars: int = CELL_CHARS) -> Collected:
    """Drain an Arrow record batch reader, keeping the rows to show; the first
    value of a one-column result keeps up to ``value_chars`` characters (it
    may be shown whole), every other cell up to :data:`CELL_CHARS`."""
    pat = importlib.import_module("pyarrow.types")
    schema = reader.schema
    numeric = [
        pat.is_integer(f.type) or pat.is_floating(f.type) or pat.is_decimal(f.type) for f in schema
    ]
    out = Collected(names=list(schema.names), numeric=numeric)
    for batch in reader:
        n = batch.num_rows
        start = out.total
        if n and start == 0 and batch.num_columns == 1 and value_chars > CELL_CHARS:
            out.head.extend(_rows(batch, 0, 1, value_chars))
            out.first_cut = max(_chars(batch.column(0)) - value_chars - 1, 0)
        if len(out.head) < ROWS_HEAD:
            taken = len(out.head) - start  # 1 when the first value was just kept
            few = min(n, max(FEW_ROWS - start, taken))  # kept wide, in case no more come
            out.head.extend(_rows(batch, taken, few, FEW_ROWS_CELL_CHARS))
            out.head.extend(_rows(batch, few, min(n, ROWS_HEAD - start)))
        first_tail = max(ROWS_HEAD - start, n - ROWS_TAIL, 0)
        if first_tail < n:
            out.tail.extend(_rows(batch, first_tail, n))
        out.total += n
    return out


def collect_rows(names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> Collected:
    """The same as :func:`collect`, from rows already fetched as Python values."""
    numeric = [
        bool(rows)
        and all(isinstance(r[i], int | float | Decimal) for r in rows if r[i] is not None)
        for i in range(len(names))
    ]
    out = Collected(names=list(names), numeric=numeric, total=len(rows))
    out.head = [tuple(r) for r in rows[:ROWS_HEAD]]
    out.tail.extend(tuple(r) for r in rows[max(ROWS_HEAD, len(rows) - ROWS_TAIL) :])
    return out


def format_cell(value: Any) -> str:
    """One value as text, the way SQL people read it."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _cut(text: str, limit: int) -> tuple[str, bool]:
    # One line per row: control characters shown escaped.
    text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if len(text) <= limit:
        return text, False
    return text[: limit - 1] + "…", True


def format_rows(
    names: Sequence[str],
    numeric: Sequence[bool],
    rows: Sequence[tuple[Any, ...] | None],
    cell_chars: int = CELL_CHARS,
) -> tuple[str, bool]:
    """A table with `` | `` between cells; ``None`` in ``rows`` is a gap
    (``...``). Returns the text and whether a cell was cut."""
    cut_any = False
    cells: list[list[str] | None] = []
    for row in rows:
        if row is None:
            cells.append(None)
            continue
        line = []
        for value in row:
            text, cut = _cut(format_cell(value), cell_chars)
            cut_any |= cut
            line.append(text)
        cells.append(line)
    widths = [len(n) for n in names]
    for cell_line in cells:
        for i, text in enumerate(cell_line or []):
            widths[i] = max(widths[i], len(text))

    def join(line: Sequence[str], align: bool) -> str:
        parts = []
        for i, text in enumerate(line):
            right = align and numeric[i]
            parts.append(text.rjust(widths[i]) if right else text.ljust(widths[i]))
        return " | ".join(parts).rstrip()

    out = [join(list(names), False), " | ".join("-" * w for w in widths)]
    out += ["..." if c is None else join(c, True) for c in cells]
    return "\n".join(out), cut_any


def format_result(statement_type: str, collected: Collected) -> str:
    """The text shown for one statement's result."""
    names, total = collected.names, collected.total
    if not names or (names == ["Success"] and total == 0):
        return "OK"
    if names == ["Count"] and statement_type in _DML_VERBS:
        if total == 0:
            return "OK"
        count = collected.head[0][0]
        noun = "row" if count == 1 else "rows"
        return f"OK, {count:,} {noun} {_DML_VERBS[statement_type]}"
    noun = "row" if total == 1 else "rows"
    if total == 1 and len(names) == 1:  # a single value: whole and as it is
        value = format_cell(collected.head[0][0])
        return f"{names[0]}\n{'-' * len(names[0])}\n{value}\n(1 row)"
    shown: list[tuple[Any, ...] | None] = list(collected.head)
    tail = list(collected.tail)
    if total > len(collected.head) + len(tail):
        shown.append(None)
    shown += tail
    chars = FEW_ROWS_CELL_CHARS if total <= FEW_ROWS else CELL_CHARS
    table, cut = format_rows(names, collected.numeric, shown, chars)
    footer = f"({total:,} {noun}"
    if total > len(collected.head) + len(tail):
        footer += f"; the first {len(collected.head)} and the last {len(tail)} shown"
    footer += ")"
    if cut:
        footer += (
            f"\n-- cells longer than {chars:,} characters were cut; "
            "select a single value to see it whole"
        )
    return f"{table}\n{footer}"


def cap(body: str, notes: Sequence[str], limit: int) -> tuple[str, int]:
    """``body`` and ``notes`` in at most ``limit`` characters: the body's end
    is cut first (the notes matter more), then the notes'. Returns the text
    and how many characters were cut."""
    tail = "\n".join(notes)
    text = f"{body}\n{tail}" if body and tail else body or tail
    if len(text) <= limit:
        return text, 0
    room = limit - len(tail) - 1
    if room > 0:
        return f"{body[:room]}\n{tail}", len(text) - limit
    return text[:limit], len(text) - limit
