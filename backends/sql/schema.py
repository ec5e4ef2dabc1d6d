"""The live schema: tables and views the model can query, their columns,
types and row counts, read from DuckDB's catalog.

Row counts are cheap or absent: Arrow data and Parquet files know theirs
(DuckDB reads Parquet counts from the file footers), DuckDB tables count
fast; CSV and JSON files are counted (once: the context is read-only) only
when they are at most :data:`COUNT_SCAN_MAX_BYTES`; views the model made are
not counted. Every count runs under :data:`COUNT_TIMEOUT_S`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from polyrlm.backends.sql.render import Collected, collect, stream
from polyrlm.backends.sql.sources import HIDDEN_PREFIX, Source, quote_ident

__all__ = [
    "CONTEXT_CATALOG",
    "COUNT_SCAN_MAX_BYTES",
    "COUNT_TIMEOUT_S",
    "Schema",
    "TableInfo",
]

#: The read-only catalog that holds the context's views and the functions' macros.
CONTEXT_CATALOG = "ctx"
#: CSV/JSON bytes at most scanned to count a context table's rows.
COUNT_SCAN_MAX_BYTES = 64 * 2**20
#: Seconds one row count may take before it is given up (shown as not counted).
COUNT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class TableInfo:
    """One table or view the model can query."""

    #: The name as the model writes it (qualified outside the search path).
    name: str
    #: ``table`` or ``view``.
    kind: str
    columns: tuple[tuple[str, str], ...]
    rows: int | None
    #: The context source behind it; None for the model's own tables.
    source: Source | None = None
    #: The fully qualified, quoted name (catalog.schema.table).
    full: str = ""


_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")
_LIST = """
SELECT database_name, schema_name, table_name, 'table' FROM duckdb_tables() WHERE NOT internal
UNION ALL
SELECT database_name, schema_name, view_name, 'view' FROM duckdb_views() WHERE NOT internal
"""
_COLUMNS = """
SELECT database_name, schema_name, table_name, column_name, data_type
FROM duckdb_columns() WHERE NOT internal ORDER BY column_index
"""


class Schema:
    """Reads the schema of one connection; caches the context's counts."""

    def __init__(self, conn: Any, sources: Sequence[Source], main_catalog: str) -> None:
        self.conn = conn
        self.main_catalog = main_catalog
        self.views = {s.name.lower(): s for s in sources if s.database is None}
        self.databases = {s.name.lower(): s for s in sources if s.database is not None}
        self._counts: dict[str, int | None] = {}
        keywords = "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved'"
        self._reserved = {str(k).lower() for (k,) in conn.sql(keywords).fetchall()}

    def _display(self, catalog: str, schema: str, name: str) -> str | None:
        """How the model names it, or None when it is not the model's to see."""
        if name.lower().startswith(HIDDEN_PREFIX):
            return None
        local = catalog in (self.main_catalog, "temp", CONTEXT_CATALOG)
        if not local and catalog.lower() not in self.databases:
            return None
        parts = [] if local else [catalog]
        if schema != "main":
            parts.append(schema)
        return ".".join(self._ident(p) for p in [*parts, name])

    def _ident(self, name: str) -> str:
        plain = _PLAIN.fullmatch(name) and name.lower() not in self._reserved
        return name if plain else quote_ident(name)

    def tables(self, *, count: bool = True, limit: int | None = None) -> list[TableInfo]:
        """Context tables first (in load order), then the model's own by name;
        the first ``limit`` of them (only those are counted)."""
        columns: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
        for db, schema, table, column, dtype in self.conn.sql(_COLUMNS).fetchall():
            columns.setdefault((db, schema, table), []).append((column, dtype))
        found = []
        listed = self.conn.sql(_LIST).fetchall()
        mine = {t.lower() for db, s, t, _ in listed if db != CONTEXT_CATALOG and s == "main"}
        for db, schema, table, kind in listed:
            name = self._display(db, schema, table)
            if name is None:
                continue
            if db == CONTEXT_CATALOG and table.lower() in mine:  # hidden by the model's own
                name = f"{CONTEXT_CATALOG}.{name}"
            source = self.views.get(table.lower()) if db == CONTEXT_CATALOG else None
            if source is None:
                source = self.databases.get(db.lower())
            full = ".".join(quote_ident(p) for p in (db, schema, table))
            cols = tuple(columns.get((db, schema, table), ()))
            found.append(TableInfo(name, kind, cols, None, source, full))
        order = [s.name.lower() for s in (*self.views.values(), *self.databases.values())]
        found.sort(
            key=lambda t: (
                t.source is None,
                order.index(t.source.name.lower()) if t.source else 0,
                t.name,
            )
        )
        found = found[:limit]
        if count:
            found = [replace(t, rows=self._rows(t.full, t.kind, t.source)) for t in found]
        return found

    def _rows(self, key: str, kind: str, source: Source | None) -> int | None:
        if source is None:  # the model's own: tables count fast, views may not
            return self._count(key) if kind == "table" else None
        if key not in self._counts:
            database_view = source.database is not None and kind == "view"
            if source.rows is not None and source.database is None:
                self._counts[key] = source.rows
            elif database_view or source.scan_bytes > COUNT_SCAN_MAX_BYTES:
                self._counts[key] = None  # a view of unknown cost, or a big CSV/JSON
            else:
                self._counts[key] = self._count(key)
        return self._counts[key]

    def _count(self, name: str) -> int | None:
        timer = threading.Timer(COUNT_TIMEOUT_S, self.conn.interrupt)
        timer.start()
        try:
            rows = self.conn.sql(f"SELECT count(*) FROM {name}").fetchall()
        except Exception:  # a broken view, or too slow: shown as not counted
            return None
        finally:
            timer.cancel()
        return int(rows[0][0])

    def sample(self, full: str, rows: int) -> Collected | None:
        """The first ``rows`` rows of a table (None when it cannot be read)."""
        timer = threading.Timer(COUNT_TIMEOUT_S, self.conn.interrupt)
        timer.start()
        try:
            return collect(stream(self.conn.sql(f"SELECT * FROM {full} LIMIT {int(rows)}")))
        except Exception:  # a file gone or changed since loading: no sample
            return None
        finally:
            timer.cancel()

    def variables(self) -> Mapping[str, str]:
        """``SET VARIABLE`` variables and their types."""
        rows = self.conn.sql("SELECT name, type FROM duckdb_variables()").fetchall()
        return {str(n): str(t) for n, t in rows}
