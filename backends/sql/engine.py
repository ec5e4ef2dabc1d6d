"""One DuckDB database holding a context read-only: the part of the sql
backend that touches DuckDB, run in the worker process (or, with
``worker=False``, in the host).

The context's tables are views in a catalog ``ctx`` attached **read-only**
(a small DuckDB file of view and macro definitions in the environment's
directory): DROP, DELETE, UPDATE, ALTER on them fail, while the model's own
tables go to the writable ``main`` schema, first on the search path. The
data under the views is never writable by SQL: in-memory values are Arrow
tables DuckDB scans in place, files are read by DuckDB's readers, database
files are attached read-only (see :mod:`polyrlm.backends.sql.sources`).

Once the context is loaded the database is locked down: DuckDB's
``enable_external_access`` is off with ``allowed_paths`` set to the
context's files (no other host file can be read, none written, no extension
installed, no Python variable scanned), the configuration is locked (so
``memory_limit``, ``threads``, ``max_temp_directory_size`` and the progress
bar stay as set here), and statements that attach, detach, copy, export,
install, load, prepare or USE are refused (see
:mod:`polyrlm.backends.sql.runner`).
"""

from __future__ import annotations

import importlib
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import Any

from polyrlm.backends.sql.functions import BatchCalls, SqlFunctions
from polyrlm.backends.sql.guide import SAMPLE_ROWS, SAMPLED_TABLES, sql_compact_guide, sql_guide
from polyrlm.backends.sql.limits import SQL_NAME_MAX_CHARS, SQL_STATE_MAX_ITEMS, cut_text
from polyrlm.backends.sql.render import Collected
from polyrlm.backends.sql.runner import REINTERRUPT_S, Watchdog, run_block
from polyrlm.backends.sql.schema import CONTEXT_CATALOG, Schema
from polyrlm.backends.sql.sources import Source, quote_ident, quote_str
from polyrlm.backends.sql.tools import SqlTools
from polyrlm.config import CLOSE_TIMEOUT_S
from polyrlm.environment import plain_answer
from polyrlm.errors import BackendUnavailable, ConfigError
from polyrlm.records import ExecResult, State, VarInfo

__all__ = ["MIN_DUCKDB", "MIN_PYARROW", "Engine", "Settings", "load_duckdb"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Oldest DuckDB that scans Arrow string views in place and has allowed_paths.
MIN_DUCKDB = (1, 5)
#: Oldest pyarrow that builds a string-view array over given buffers.
MIN_PYARROW = (19, 0)


def _version(text: str) -> tuple[int, ...]:
    """``"1.5.6"`` -> ``(1, 5, 6)``; a suffix such as ``.dev1`` or ``rc1`` is dropped."""
    return tuple(int("".join(takewhile(str.isdigit, p)) or 0) for p in text.split(".")[:3])


def load_duckdb() -> Any:
    """The duckdb module, once duckdb and pyarrow are known to be recent enough."""
    try:
        duckdb = importlib.import_module("duckdb")
        pyarrow = importlib.import_module("pyarrow")
    except ImportError as exc:  # pragma: no cover - the registry checks first
        raise BackendUnavailable(
            f'the sql backend needs {exc.name}: pip install "polyrlm[sql]"'
        ) from exc
    for module, least in ((duckdb, MIN_DUCKDB), (pyarrow, MIN_PYARROW)):
        if _version(module.__version__) < least:
            raise BackendUnavailable(
                f"the sql backend needs {module.__name__} >= {'.'.join(map(str, least))} "
                f'(string views), not {module.__version__}: pip install -U "polyrlm[sql]"'
            )
    return duckdb


@dataclass(frozen=True)
class Settings:
    """What the database is opened with (JSON data: it crosses to the worker)."""

    #: The environment's own directory: the ``ctx`` file, spill files.
    folder: str
    threads: int
    memory_limit_bytes: int
    temp_limit_bytes: int
    #: How the guide describes where DuckDB runs.
    flavour: str
    #: The user tools, as their records (:meth:`polyrlm.tools.Tool.record`).
    tools: tuple[Mapping[str, Any], ...] = ()


class Engine:
    """An in-memory DuckDB database, its SQL functions, and the loaded context."""

    def __init__(self, subcalls: BatchCalls, settings: Settings) -> None:
        duckdb = load_duckdb()
        self.settings = settings
        self.folder = Path(settings.folder)
        self._busy = threading.Lock()  # held while a block runs
        self.conn: Any = None
        self.functions = SqlFunctions(subcalls)
        config = {
            "threads": str(settings.threads),
            "memory_limit": f"{settings.memory_limit_bytes}B",
            "max_temp_directory_size": f"{settings.temp_limit_bytes}B",
            "temp_directory": str(self.folder / "spill"),
        }
        try:
            self.conn = duckdb.connect(":memory:", config=config)
            # Session options: nothing may print on the process's stdout.
            self.conn.execute("SET enable_progress_bar = false")
            self.conn.execute("SET enable_progress_bar_print = false")
        except duckdb.Error as exc:
            raise ConfigError(f"sql backend: bad setting in {config}: {exc}") from exc
        self.main_catalog = str(self.conn.sql("SELECT current_database()").fetchall()[0][0])
        self.functions.register(self.conn)
        self.tools = SqlTools(subcalls, settings.tools, self.functions.gather)
        try:  # a clash stops the environment here, naming the tool
            self.tools.register(self.conn)
        except BaseException:
            self.conn.close()
            raise
        self.watchdog = Watchdog(self.conn, self.functions)
        self.sources: list[Source] = []
        self.schema = Schema(self.conn, [], self.main_catalog)

    # -- the context --

    def load(self, sources: list[Source]) -> None:
        for s in sources:
            if s.database is not None and not _IDENT.fullmatch(s.name):
                raise ConfigError(
                    f"a DuckDB database context needs a plain name (letters, digits, _), "
                    f"not {s.name!r}"
                )
        try:
            self._build(sources)
        except ConfigError:
            raise
        except Exception as exc:  # DuckDB's reason: a bad file, a locked database, ...
            raise ConfigError(f"cannot load the context into DuckDB: {exc}") from exc
        self.sources = sources
        self.schema = Schema(self.conn, sources, self.main_catalog)

    def _build(self, sources: list[Source]) -> None:
        conn, ctx = self.conn, CONTEXT_CATALOG
        for s in sources:
            for hidden, table in s.arrow.items():
                conn.register(hidden, table)
        file = self.folder / "context.duckdb"
        for old in (file, file.with_name(file.name + ".wal")):  # a replaced worker's
            old.unlink(missing_ok=True)
        path = quote_str(str(file))
        conn.execute(f"ATTACH {path} AS {ctx}")
        try:
            for s in sources:
                if s.database is None:
                    conn.execute(f"CREATE VIEW {ctx}.main.{quote_ident(s.name)} AS {s.select}")
            for statement in SqlFunctions.macros(f"{ctx}.main"):
                conn.execute(statement)
            self.tools.create_macros(conn, f"{ctx}.main")
        finally:
            conn.execute(f"DETACH {ctx}")
        conn.execute(f"ATTACH {path} AS {ctx} (READ_ONLY)")
        search = ["main", f"{ctx}.main"]
        for s in sources:
            if s.database is not None:
                conn.execute(f"ATTACH {quote_str(s.database)} AS {s.name} (READ_ONLY)")
                search.append(f"{s.name}.main")
        conn.execute(f"SET search_path = {quote_str(','.join(search))}")
        files = sorted({f for s in sources if s.database is None for f in s.files})
        if files:
            conn.execute(f"SET allowed_paths = [{', '.join(quote_str(f) for f in files)}]")
        # From here on: no other host file, no extension install, no settings changed.
        conn.execute("SET enable_external_access = false")
        conn.execute("SET lock_configuration = true")

    # -- running code --

    def execute(
        self, code: str, timeout_s: float, limit_chars: int, show_result: bool = True
    ) -> ExecResult:
        with self._busy:
            return run_block(
                self.conn,
                self.functions,
                self.watchdog,
                code,
                timeout_s=timeout_s,
                limit_chars=limit_chars,
                show_result=show_result,
            )

    def state(self) -> State:
        """The model's view of the database: at most SQL_STATE_MAX_ITEMS names."""
        variables = [
            VarInfo(
                name=cut_text(t.name, SQL_NAME_MAX_CHARS, "name"),
                type=f"{t.kind}, {len(t.columns)} columns",
                size=t.rows,
            )
            for t in self.schema.tables(limit=SQL_STATE_MAX_ITEMS)
        ]
        for name, dtype in list(self.schema.variables().items())[:SQL_STATE_MAX_ITEMS]:
            variables.append(
                VarInfo(
                    name=cut_text(name, SQL_NAME_MAX_CHARS, "name"),
                    type=cut_text(f"variable {dtype}", SQL_NAME_MAX_CHARS, "type"),
                    size=None,
                )
            )
        ready = self.functions.ready
        return State(
            variables=tuple(variables[:SQL_STATE_MAX_ITEMS]),
            answer=plain_answer(self.functions.answer),
            answer_ready=ready,
        )

    def guide(self, timeout_s: float, compact: bool = False) -> str:
        tables = self.schema.tables()
        if compact:
            return sql_compact_guide(flavour=self.settings.flavour, tables=tables)
        samples: dict[str, Collected] = {}
        for table in [t for t in tables if t.source is not None][:SAMPLED_TABLES]:
            sample = self.schema.sample(table.full, SAMPLE_ROWS)
            if sample is not None and sample.head:
                samples[table.name] = sample
        return sql_guide(
            flavour=self.settings.flavour,
            timeout_s=timeout_s,
            tables=tables,
            samples=samples,
            databases=[s.name for s in self.sources if s.database is not None],
        )

    # -- the end --

    def _stopped(self) -> bool:
        """Interrupt a block still running (an abandoned execute, an
        interrupted run) until it has stopped, at most CLOSE_TIMEOUT_S."""
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while not self._busy.acquire(timeout=REINTERRUPT_S):
            self.functions.cancelled.set()  # UDFs waiting on sub-calls give up
            self.conn.interrupt()
            if time.monotonic() > deadline:
                return False
        return True

    def close(self) -> None:
        watchdog = getattr(self, "watchdog", None)
        if self.conn is not None and self._stopped():
            self.conn.close()
            self._busy.release()
            if watchdog is not None:
                watchdog.stop()
        # else: a statement that would not stop keeps the connection; closing
        # it under the statement would crash DuckDB; it goes with the process.
        self.sources = []
