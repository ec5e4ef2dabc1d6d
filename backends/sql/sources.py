"""How a context becomes DuckDB tables: one :class:`Source` per table.

In-memory values (text, documents, DataFrames, Arrow tables) become Arrow
tables that DuckDB scans in place (no copy into DuckDB); files become views
over DuckDB's readers (``read_parquet``, ``read_csv``, ``read_json``), so a
query reads the file lazily; a plain text file is memory-mapped and split
into lines that point into the mapping (:mod:`polyrlm.backends.sql.lines`);
an existing DuckDB database file is attached read-only.

Text is split with ``str.split("\\n")`` semantics: ``line_no`` counts from 1,
the lines keep any ``\\r``, a final ``\\n`` gives a last, empty line, so
``string_agg(text, chr(10) ORDER BY line_no)`` is the text again and its
length is ``sum(length(text)) + count(*) - 1``. Documents are numbered by
their list index: ``doc_id`` counts from 0.
"""

from __future__ import annotations

import glob
import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyrlm.backends.sql.lines import lines_table
from polyrlm.errors import ConfigError

__all__ = [
    "HIDDEN_PREFIX",
    "RESERVED_CATALOGS",
    "Source",
    "named_values",
    "plan_source",
    "plan_sources",
    "quote_ident",
    "quote_str",
    "shipped_text_source",
    "text_of",
]

#: Prefix of every name the backend makes for itself (Arrow data, UDFs).
HIDDEN_PREFIX = "__polyrlm"
#: Catalog names a DuckDB database context cannot take.
RESERVED_CATALOGS = frozenset({"ctx", "main", "memory", "system", "temp"})

_TABLE_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_COMPRESSIONS = (".gz", ".zst")
_DATABASE_SUFFIXES = frozenset({".duckdb", ".ddb"})
_GLOB_CHARS = frozenset("*?[")


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_str(text: str) -> str:
    """``text`` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Source:
    """One table of the context (or one attached database)."""

    #: Table name in the ``ctx`` catalog, or the catalog name of a database.
    name: str
    #: What it is, for the guide: ``text``, ``documents``, ``table``, ``parquet``, ...
    kind: str
    #: Where it comes from, for the guide, e.g. ``file big.parquet, read lazily``.
    origin: str
    #: SQL body of the view (empty for a database).
    select: str = ""
    #: Arrow data to register under hidden names, referenced by ``select``.
    arrow: dict[str, Any] = field(default_factory=dict)
    #: Files DuckDB may read for this source (and nothing else).
    files: tuple[str, ...] = ()
    #: Path of a DuckDB database file to attach read-only.
    database: str | None = None
    #: Rows, when known without a scan.
    rows: int | None = None
    #: Bytes of files that only a full scan can count (CSV, JSON).
    scan_bytes: int = 0


def _pa() -> Any:
    return importlib.import_module("pyarrow")


def _hidden(name: str, part: str = "data") -> str:
    # Hex: unique however names differ (DuckDB names ignore case), and always an identifier.
    return f"{HIDDEN_PREFIX}_{part}_{name.encode().hex()}"


def _lines_select(hidden: str) -> str:
    return f"SELECT line_no, text FROM {quote_ident(hidden)}"


def _text_source(name: str, text: str) -> Source:
    # "replace" turns lone surrogates into "?": one character each, lengths kept.
    table = lines_table(_pa().py_buffer(text.encode("utf-8", "replace")))
    hidden = _hidden(name)
    return Source(
        name=name,
        kind="text",
        origin=f"in-memory text of {len(text):,} characters, one row per line",
        select=_lines_select(hidden),
        arrow={hidden: table},
        rows=table.num_rows,
    )


def _documents_source(name: str, docs: Sequence[Any]) -> Source:
    pa = _pa()
    texts = [
        d if isinstance(d, str) else json.dumps(d, ensure_ascii=False, default=str) for d in docs
    ]
    table = pa.table(
        {
            "doc_id": pa.array(range(len(texts)), type=pa.int64()),
            "text": pa.array(texts, type=pa.large_string()),
        }
    )
    hidden = _hidden(name)
    return Source(
        name=name,
        kind="documents",
        origin=f"in-memory list of {len(texts):,} documents, one row per document",
        select=f"SELECT doc_id, text FROM {quote_ident(hidden)}",
        arrow={hidden: table},
        rows=len(texts),
    )


def _arrow_of(value: Any) -> Any | None:
    """``value`` as an Arrow table (DataFrame, Arrow, anything with the Arrow
    stream interface), or None when it is none of these."""
    pa = _pa()
    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    if isinstance(value, pa.RecordBatchReader):
        return value.read_all()
    if hasattr(value, "columns") and hasattr(value, "dtypes") and hasattr(value, "iloc"):
        try:
            return pa.Table.from_pandas(value)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            # Mixed-type object columns: shown as their text.
            text = value.copy()
            for column in text.select_dtypes(include="object").columns:
                text[column] = text[column].map(lambda v: None if v is None else str(v))
            return pa.Table.from_pandas(text)
    if hasattr(value, "__arrow_c_stream__"):
        return pa.table(value)
    return None


def _table_source(name: str, table: Any, what: str) -> Source:
    hidden = _hidden(name)
    return Source(
        name=name,
        kind="table",
        origin=f"in-memory {what} of {table.num_rows:,} rows",
        select=f"SELECT * FROM {quote_ident(hidden)}",
        arrow={hidden: table},
        rows=table.num_rows,
    )


def _format_of(path: Path) -> str:
    """``parquet``, ``csv``, ``tsv``, ``json``, ``jsonl``, ``database`` or ``text``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes.pop()
    last = suffixes[-1] if suffixes else ""
    if last in _DATABASE_SUFFIXES:
        return "database"
    return _TABLE_FORMATS.get(last, "text")


def _reader(fmt: str, files: Sequence[str]) -> str:
    listed = "[" + ", ".join(quote_str(f) for f in files) + "]"
    many = ", union_by_name = true" if len(files) > 1 else ""
    if fmt == "parquet":
        return f"SELECT * FROM read_parquet({listed}{many})"
    if fmt == "csv":
        return f"SELECT * FROM read_csv({listed}{many})"
    if fmt == "tsv":
        return f"SELECT * FROM read_csv({listed}, delim = '\\t'{many})"
    if fmt == "json":
        return f"SELECT * FROM read_json_auto({listed}{many})"
    return f"SELECT * FROM read_json({listed}, format = 'newline_delimited'{many})"


def shipped_text_source(name: str, path: Path, chars: int) -> Source:
    """An in-memory text that the host wrote to ``path`` as UTF-8 (see
    :mod:`polyrlm.backends.sql.transfer`): memory-mapped, not copied."""
    data = _pa().memory_map(str(path)).read_buffer()
    table = lines_table(data)
    hidden = _hidden(name)
    return Source(
        name=name,
        kind="text",
        origin=f"in-memory text of {chars:,} characters, one row per line",
        select=_lines_select(hidden),
        arrow={hidden: table},
        rows=table.num_rows,
    )


def _text_file_source(name: str, path: Path) -> Source:
    pa = _pa()
    data = pa.memory_map(str(path)).read_buffer()  # pages stay in the file, not copied
    table = lines_table(data)
    origin = f"text file {path.name}, memory-mapped, one row per line"
    try:
        table.column("text").validate(full=True)
    except pa.ArrowInvalid:  # not UTF-8: decode it once, with replacement characters
        text = path.read_bytes().decode("utf-8", "replace")
        table = lines_table(pa.py_buffer(text.encode("utf-8")))
        origin = f"text file {path.name} (not UTF-8: decoded with replacements), one row per line"
    hidden = _hidden(name)
    return Source(
        name=name,
        kind="text",
        origin=origin,
        select=_lines_select(hidden),
        arrow={hidden: table},
        files=(str(path),),
        rows=table.num_rows,
    )


def _documents_dir_source(name: str, files: Sequence[Path], label: str) -> Source:
    pa = _pa()
    paths = [str(f) for f in files]
    index = pa.table(
        {
            "doc_id": pa.array(range(len(paths)), type=pa.int64()),
            "path": pa.array([f.name for f in files], type=pa.string()),
            "full": pa.array(paths, type=pa.string()),
        }
    )
    hidden = _hidden(name, "files")
    listed = "[" + ", ".join(quote_str(p) for p in paths) + "]"
    select = (
        f"SELECT d.doc_id, f.content AS text, d.path FROM read_text({listed}) AS f "
        f"JOIN {quote_ident(hidden)} AS d ON f.filename = d.full"
    )
    return Source(
        name=name,
        kind="documents",
        origin=f"{label}: {len(paths):,} text files, one row per file, read lazily",
        select=select,
        arrow={hidden: index},
        files=tuple(paths),
        rows=len(paths),
    )


def _expand(path: Path) -> tuple[list[Path], str]:
    """The files a path names (a file, a directory's files, a glob's matches)."""
    text = str(path)
    if any(c in text for c in _GLOB_CHARS) and not path.exists():
        found = sorted(Path(p) for p in glob.glob(text, recursive=True))
        files = [p.resolve() for p in found if p.is_file()]
        if not files:
            raise ConfigError(f"cannot read context {text!r}: the pattern matches no file")
        return files, f"glob {text}"
    if path.is_dir():
        files = sorted(p.resolve() for p in path.iterdir() if p.is_file())
        files = [p for p in files if not p.name.startswith(".")]
        if not files:
            raise ConfigError(f"cannot read context {text!r}: the directory has no files")
        return files, f"directory {path.name}"
    if not path.is_file():
        raise ConfigError(f"cannot read context {text!r}: no such file")
    return [path.resolve()], f"file {path.name}"


def _path_source(name: str, path: Path) -> Source:
    files, label = _expand(path.expanduser())
    formats = {_format_of(f) for f in files}
    if "database" in formats:
        if len(files) > 1:
            raise ConfigError(
                f"cannot read context {str(path)!r}: pass DuckDB database files one by one, "
                "as named contexts"
            )
        if name in RESERVED_CATALOGS:
            raise ConfigError(f"a DuckDB database context cannot be named {name!r}")
        return Source(
            name=name,
            kind="database",
            origin=f"DuckDB database {files[0].name}, attached read-only",
            database=str(files[0]),
            files=(str(files[0]),),
        )
    if len(formats) == 1 and formats != {"text"}:
        fmt = formats.pop()
        paths = [str(f) for f in files]
        size = sum(f.stat().st_size for f in files)
        return Source(
            name=name,
            kind=fmt,
            origin=f"{label} ({fmt}, {size / 2**20:,.1f} MiB), read lazily",
            select=_reader(fmt, paths),
            files=tuple(paths),
            scan_bytes=0 if fmt == "parquet" else size,  # Parquet counts come from metadata
        )
    if len(files) == 1:
        return _text_file_source(name, files[0])
    return _documents_dir_source(name, files, label)


def text_of(value: Any) -> str | None:
    """The text a value is loaded as (a str; a number, or nested named
    contexts, as JSON), or None when it is not loaded as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, Mapping):  # nested named contexts: kept as JSON text
        return json.dumps(value, ensure_ascii=False, default=str)
    return None


def plan_source(name: str, value: Any) -> Source:
    """The table (or database) of one named value."""
    if isinstance(value, Path):
        return _path_source(name, value)
    text = text_of(value)
    if text is not None:
        return _text_source(name, text)
    table = _arrow_of(value)
    if table is not None:
        return _table_source(name, table, type(value).__name__)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        if value and all(isinstance(v, Mapping) for v in value):
            return _table_source(name, _pa().Table.from_pylist(list(value)), "list of records")
        return _documents_source(name, value)
    raise ConfigError(
        f"the sql backend cannot load a {type(value).__name__} as a context: pass a str, a "
        "list of documents, a dict of named contexts, a DataFrame, an Arrow table or a Path"
    )


def named_values(context: Any) -> list[tuple[str, Any]]:
    """``context`` as (table name, value) pairs: one per named context, or
    ``context`` alone; names are checked (DuckDB's ignore case)."""
    if context is None:
        return []
    if not isinstance(context, Mapping):
        return [("context", context)]
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for key in context:
        name = str(key)
        if not name or name.lower().startswith(HIDDEN_PREFIX):
            raise ConfigError(f"a named context cannot be called {name!r}")
        if name.lower() in seen:
            raise ConfigError(f"two named contexts are both called {name!r} (ignoring case)")
        seen.add(name.lower())
        out.append((name, context[key]))
    return out


def plan_sources(context: Any) -> list[Source]:
    """The tables (and databases) that make up ``context``."""
    return [plan_source(name, value) for name, value in named_values(context)]
