"""An instance's context as one text, for the ``base`` method (and anything
else that must put the context into a prompt).

Texts and documents are joined; named tables (CSV or Parquet files) are
written as CSV, each under a ``##### table NAME (N rows) #####`` line. Only
the first ``limit`` characters are ever made: a 6-million-row table is not
turned into gigabytes of text to keep its head.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

__all__ = ["TABLE_TEXT_BATCH_ROWS", "context_text"]

#: Rows of a Parquet table converted to CSV at a time.
TABLE_TEXT_BATCH_ROWS = 10_000


def _parquet_csv(path: Path, limit: int) -> tuple[str, int]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    # Arrow's CSV writer takes no string views (tpchgen writes them): plain strings instead.
    schema = pa.schema(
        f.with_type(pa.string()) if f.type == pa.string_view() else f for f in table.schema_arrow
    )
    out = io.BytesIO()
    header = True
    for batch in table.iter_batches(batch_size=TABLE_TEXT_BATCH_ROWS):
        rows = pa.Table.from_batches([batch]).cast(schema)
        pacsv.write_csv(rows, out, pacsv.WriteOptions(include_header=header))
        header = False
        if out.tell() >= limit:
            break
    return out.getvalue().decode("utf-8", "replace")[:limit], table.metadata.num_rows


def _csv_text(path: Path, limit: int) -> tuple[str, int]:
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        text = f.read(limit)
    with path.open("rb") as f:
        rows = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b"")) - 1
    return text, rows


def _tables_text(tables: Mapping[str, Path], limit: int) -> str:
    parts: list[str] = []
    left = limit
    for name, path in tables.items():
        if left <= 0:
            break
        read = _parquet_csv if path.suffix.lower() in {".parquet", ".pq"} else _csv_text
        text, rows = read(Path(path), left)
        body = text.rstrip("\n")  # tables are separated by one blank line
        part = f"##### table {name} ({rows:,} rows) #####\n{body}"
        parts.append(part)
        left -= len(part) + 2
    return "\n\n".join(parts)[:limit]


def context_text(context: str | list[str] | Mapping[str, Path], limit: int) -> str:
    """At most ``limit`` characters of ``context`` as one text."""
    if isinstance(context, str):
        return context[:limit]
    if isinstance(context, Mapping):
        return _tables_text(context, limit)
    out: list[str] = []
    total = 0
    for doc in context:  # joined lazily: a million documents are not copied to cut their head
        out.append(doc)
        total += len(doc) + 2
        if total >= limit:
            break
    return "\n\n".join(out)[:limit]
