"""``sql``: the context as DuckDB tables, sub-models as SQL functions.

One in-memory DuckDB database per environment, in the host process. The
context's tables are views in a catalog ``ctx`` attached **read-only** (a
small DuckDB file of view and macro definitions in a temporary directory):
DROP, DELETE, UPDATE, ALTER on them fail, while the model's own tables go to
the writable ``main`` schema, first on the search path. The data under the
views is never writable by SQL: in-memory values are Arrow tables DuckDB
scans in place, files are read by DuckDB's readers, database files are
attached read-only (see :mod:`polyrlm.backends.sql.sources`).

Once the context is loaded the database is locked down: DuckDB's
``enable_external_access`` is off with ``allowed_paths`` set to the
context's files (no other host file can be read, none written, no extension
installed, no Python variable scanned), the configuration is locked, and
statements that attach, detach, copy, export, install, load, prepare or USE
are refused (see :mod:`polyrlm.backends.sql.runner`). It is still not a sandbox
(``sandboxed = False``): DuckDB runs inside the host process, sharing its
memory; a DuckDB bug is the host's problem.
"""

from __future__ import annotations

import importlib
import re
import shutil
import tempfile
import threading
import time
import weakref
from itertools import takewhile
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from polyrlm.backends.sql.functions import SqlFunctions
from polyrlm.backends.sql.guide import SAMPLE_ROWS, SAMPLED_TABLES, sql_guide
from polyrlm.backends.sql.render import Collected
from polyrlm.backends.sql.runner import REINTERRUPT_S, run_block
from polyrlm.backends.sql.schema import CONTEXT_CATALOG, Schema
from polyrlm.backends.sql.sources import Source, plan_sources, quote_ident, quote_str
from polyrlm.config import CLOSE_TIMEOUT_S
from polyrlm.environment import ContractSnippets, EnvConfig, Environment, SubCalls, plain_answer
from polyrlm.errors import BackendUnavailable, ConfigError
from polyrlm.records import ExecResult, State, VarInfo

__all__ = ["MIN_DUCKDB", "MIN_PYARROW", "SQL_CONTRACT", "SqlEnvironment"]

#: Runs until interrupted: 10**12 x 10**4 pairs; the small side is all DuckDB keeps.
_FOREVER = (
    "SELECT count(*) FROM range(1000000000000) AS a CROSS JOIN range(10000) AS b "
    "WHERE (a.range * 7 + b.range) % 1000003 = 17"
)

SQL_CONTRACT = ContractSnippets(
    print_hello="SELECT 'hello' AS greeting",
    set_var="CREATE TABLE x AS SELECT 41 AS x",
    read_var="SELECT x + 1 AS y FROM x",
    context_length="SELECT sum(length(text)) + count(*) - 1 AS chars FROM context",
    set_answer="SELECT final('42')",
    fail="SELECT error('boom')",
    llm_query="SELECT llm('ping') AS reply",
    llm_batch=(
        "SELECT string_agg(llm(p), ',' ORDER BY i) AS replies "
        "FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) AS t(i, p)"
    ),
    loop_forever=_FOREVER,
    flood="SELECT repeat('x', 10000000) AS flood",
)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Oldest DuckDB that scans Arrow string views in place and has allowed_paths.
MIN_DUCKDB = (1, 5)
#: Oldest pyarrow that builds a string-view array over given buffers.
MIN_PYARROW = (19, 0)


def _version(text: str) -> tuple[int, ...]:
    """``"1.5.6"`` -> ``(1, 5, 6)``; a suffix such as ``.dev1`` or ``rc1`` is dropped."""
    return tuple(int("".join(takewhile(str.isdigit, p)) or 0) for p in text.split(".")[:3])


def _duckdb() -> Any:
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


class SqlEnvironment(Environment):
    """An in-memory DuckDB database holding the context read-only."""

    name: ClassVar[str] = "sql"
    language: ClassVar[str] = "sql"
    fence_tags: ClassVar[tuple[str, ...]] = ("sql", "duckdb")
    sandboxed: ClassVar[bool] = False
    contract: ClassVar[ContractSnippets] = SQL_CONTRACT

    class Config(EnvConfig):
        """Options of the sql backend."""

        threads: int | None = Field(
            None, ge=1, description="DuckDB worker threads; None: one per CPU core."
        )
        memory_limit: str | None = Field(
            None,
            description="DuckDB's memory limit, e.g. '4GB'; None: DuckDB's default (80% of RAM). "
            "Past it, DuckDB spills to the environment's temporary directory.",
        )

    def __init__(self, subcalls: SubCalls, config: EnvConfig | None = None) -> None:
        super().__init__(subcalls, config)
        duckdb = _duckdb()
        self._dir = Path(tempfile.mkdtemp(prefix="polyrlm-sql-"))
        # The directory goes even when close() is never called.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._closed = False
        self._busy = threading.Lock()  # held while a block runs
        self._loaded = False
        self._sources: list[Source] = []
        self.conn = duckdb.connect(":memory:")
        try:
            settings = {"temp_directory": str(self._dir / "spill")}
            threads = getattr(self.config, "threads", None)
            memory = getattr(self.config, "memory_limit", None)
            if threads is not None:
                settings["threads"] = str(threads)
            if memory is not None:
                settings["memory_limit"] = memory
            for key, value in settings.items():
                try:
                    self.conn.execute(f"SET {key} = {quote_str(value)}")
                except duckdb.Error as exc:
                    raise ConfigError(f"sql backend: bad setting {key}={value!r}: {exc}") from exc
            self.main_catalog = str(self.conn.sql("SELECT current_database()").fetchall()[0][0])
            self.functions = SqlFunctions(subcalls)
            self.functions.register(self.conn)
        except BaseException:
            self.close()
            raise
        self._schema = Schema(self.conn, [], self.main_catalog)

    # -- the context --

    def load_context(self, context: Any) -> None:
        if self._loaded:
            raise ConfigError("the sql environment already holds a context; make a new one")
        sources = plan_sources(context)
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
        self._sources = sources
        self._schema = Schema(self.conn, sources, self.main_catalog)
        self._loaded = True

    def _build(self, sources: list[Source]) -> None:
        conn, ctx = self.conn, CONTEXT_CATALOG
        for s in sources:
            for hidden, table in s.arrow.items():
                conn.register(hidden, table)
        path = quote_str(str(self._dir / "context.duckdb"))
        conn.execute(f"ATTACH {path} AS {ctx}")
        try:
            for s in sources:
                if s.database is None:
                    conn.execute(f"CREATE VIEW {ctx}.main.{quote_ident(s.name)} AS {s.select}")
            for statement in SqlFunctions.macros(f"{ctx}.main"):
                conn.execute(statement)
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

    def execute(self, code: str) -> ExecResult:
        if not self._loaded:
            self.load_context(None)
        with self._busy:
            return run_block(
                self.conn,
                self.functions,
                code,
                timeout_s=self.exec_limit_s(),
                limit_chars=self.config.capture_limit_chars,
            )

    def read_state(self) -> State:
        if not self._loaded:
            self.load_context(None)
        variables = [
            VarInfo(name=t.name, type=f"{t.kind}, {len(t.columns)} columns", size=t.rows)
            for t in self._schema.tables()
        ]
        for name, dtype in self._schema.variables().items():
            variables.append(VarInfo(name=name, type=f"variable {dtype}", size=None))
        return State(
            variables=tuple(variables),
            answer=plain_answer(self.functions.answer),
            answer_ready=self.functions.ready,
        )

    def prompt_guide(self) -> str:
        if not self._loaded:
            self.load_context(None)
        tables = self._schema.tables()
        samples: dict[str, Collected] = {}
        for table in [t for t in tables if t.source is not None][:SAMPLED_TABLES]:
            sample = self._schema.sample(table.full, SAMPLE_ROWS)
            if sample is not None and sample.head:
                samples[table.name] = sample
        return sql_guide(
            flavour="DuckDB in-process; the context read-only, no files written",
            timeout_s=self.config.exec_timeout_s,
            tables=tables,
            samples=samples,
            databases=[s.name for s in self._sources if s.database is not None],
        )

    def _stopped(self, conn: Any) -> bool:
        """Interrupt a block still running (an abandoned execute, an
        interrupted run) until it has stopped, at most CLOSE_TIMEOUT_S."""
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        functions = getattr(self, "functions", None)
        while not self._busy.acquire(timeout=REINTERRUPT_S):
            if functions is not None:
                functions.cancelled.set()  # UDFs waiting on sub-calls give up
            conn.interrupt()
            if time.monotonic() > deadline:
                return False
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn = getattr(self, "conn", None)
        if conn is not None and self._stopped(conn):
            conn.close()
            self._busy.release()
        # else: a statement that would not stop keeps the connection; closing
        # it under the statement would crash DuckDB; it goes with the process.
        self._sources = []
        self._cleanup()
