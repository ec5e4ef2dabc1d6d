"""``sql``: the context as DuckDB tables, sub-models as SQL functions.

One in-memory DuckDB database per environment (:mod:`.engine`: the context
read-only in a catalog ``ctx``, external access limited to the context's
files, the configuration locked, file statements refused). By default it
runs in a worker process of its own (:mod:`.process`, :mod:`.worker`),
started with no host secrets and under an address-space cap, because
DuckDB's ``memory_limit`` does not bound every allocation:
``SELECT repeat('x', 2e9)`` would otherwise build 2 GB inside the host.
There it fails with DuckDB's "Out of Memory Error"; a worker that dies
or does not stop is replaced. ``llm()``, ``rlm()`` and the user's tools
reach the host through the bridge. With ``worker=False`` DuckDB runs in the
host process (no process start, in-memory contexts scanned in place, for
trusted code).

Each user tool is an SQL function of its own name, typed from its JSON
Schemas and vectorised like ``llm()`` (:mod:`.tools`); it runs on the host.
A typed answer is a DuckDB value given to ``final()`` (a STRUCT becomes a
dict, a LIST a list) or JSON text, checked on the host; the guide shows its
type as a DuckDB type (:mod:`.typed_guide`).

Either way what the host takes back is bounded: output at the capture
limit (cells cut inside Arrow), errors at ``SQL_ERROR_MAX_CHARS``, the answer
at ``SQL_ANSWER_MAX_CHARS``; limits are in :mod:`.limits`. It is not a
sandbox (``sandboxed = False``): the worker has the host user's rights, and
a DuckDB bug exploited by the model's SQL could use them.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

from pydantic import Field, model_validator

from polyrlm.answers import AnswerType
from polyrlm.backends.sql.engine import MIN_DUCKDB, MIN_PYARROW, Engine, Settings, load_duckdb
from polyrlm.backends.sql.limits import (
    SQL_MEMORY_LIMIT_BYTES,
    SQL_TEMP_LIMIT_BYTES,
    SQL_THREADS,
    SQL_WORKER_BASE_BYTES,
    SQL_WORKER_MEMORY_BYTES,
    SQL_WORKER_START_TIMEOUT_S,
)
from polyrlm.backends.sql.sources import plan_sources
from polyrlm.backends.sql.statements import sql_ready
from polyrlm.backends.sql.typed_guide import sql_answer_guide, sql_tools_guide
from polyrlm.environment import ContractSnippets, EnvConfig, Environment, SubCalls
from polyrlm.errors import ConfigError
from polyrlm.records import ExecResult, State
from polyrlm.tools import Tool

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
    typed_answer="SELECT final({'name': 'Ada', 'tags': ['x', 'y'], 'address': {'city': 'Paris'}})",
    wrong_typed_answer="SELECT final({'name': 'Ada', 'tags': 'x'})",
    call_tool="SELECT final(area(6, 7))",
    typed_llm_query=(
        "SELECT json_extract_string(llm('ping', '{\"type\": \"object\"}'), '$.echo') AS echo"
    ),
)


class _Database(Protocol):
    """Where the database runs: in the host (:class:`_InHost`) or a worker."""

    def load(self, context: Any) -> None: ...
    def execute(
        self, code: str, timeout_s: float, limit_chars: int, show_result: bool = True
    ) -> ExecResult: ...
    def state(self) -> State: ...
    def guide(self, timeout_s: float, compact: bool = False) -> str: ...
    def close(self) -> None: ...


class _InHost:
    """The database in the host process (``worker=False``)."""

    def __init__(self, subcalls: SubCalls, settings: Settings) -> None:
        self.engine = Engine(subcalls, settings)

    def load(self, context: Any) -> None:
        self.engine.load(plan_sources(context))

    def execute(
        self, code: str, timeout_s: float, limit_chars: int, show_result: bool = True
    ) -> ExecResult:
        return self.engine.execute(code, timeout_s, limit_chars, show_result)

    def state(self) -> State:
        return self.engine.state()

    def guide(self, timeout_s: float, compact: bool = False) -> str:
        return self.engine.guide(timeout_s, compact)

    def close(self) -> None:
        self.engine.close()


class SqlEnvironment(Environment):
    """An in-memory DuckDB database holding the context read-only."""

    name: ClassVar[str] = "sql"
    language: ClassVar[str] = "sql"
    fence_tags: ClassVar[tuple[str, ...]] = ("sql", "duckdb")
    sandboxed: ClassVar[bool] = False
    contract: ClassVar[ContractSnippets] = SQL_CONTRACT
    #: Results of a pipelined block's parts are notes only: one per line.
    part_separator: ClassVar[str] = "\n"

    class Config(EnvConfig):
        """Options of the sql backend."""

        threads: int = Field(SQL_THREADS, ge=1, description="DuckDB worker threads.")
        memory_limit_bytes: int = Field(
            SQL_MEMORY_LIMIT_BYTES,
            ge=2**24,
            description="DuckDB's memory_limit, in bytes: past it DuckDB spills to the "
            "environment's temporary directory (it does not bound every allocation; "
            "worker_memory_bytes does).",
        )
        temp_limit_bytes: int = Field(
            SQL_TEMP_LIMIT_BYTES,
            ge=0,
            description="DuckDB's max_temp_directory_size, in bytes: what spilling may "
            "write to the environment's own temporary directory (removed on close).",
        )
        worker: bool = Field(
            True,
            description="Run DuckDB in a worker process under worker_memory_bytes, so no "
            "statement can exhaust the host's memory. False: in the host process (faster "
            "start, in-memory contexts not copied; for trusted code only).",
        )
        worker_memory_bytes: int = Field(
            SQL_WORKER_MEMORY_BYTES,
            ge=2**30,
            description="Address space of the worker process (RLIMIT_AS), in bytes, besides "
            "the memory-mapped context; at least memory_limit_bytes + SQL_WORKER_BASE_BYTES.",
        )
        start_timeout_s: float = Field(
            SQL_WORKER_START_TIMEOUT_S, gt=0, description="Seconds the worker may take to start."
        )

        @model_validator(mode="after")
        def _room(self) -> Self:
            least = self.memory_limit_bytes + SQL_WORKER_BASE_BYTES
            if self.worker and self.worker_memory_bytes < least:
                raise ValueError(
                    f"worker_memory_bytes ({self.worker_memory_bytes:,}) must be at least "
                    f"memory_limit_bytes + {SQL_WORKER_BASE_BYTES:,} ({least:,}): DuckDB needs "
                    "room beside its buffers"
                )
            return self

    config: Config

    @classmethod
    def keeps_spare(cls, config: EnvConfig) -> bool:
        # The worker takes 0.4-0.5 s to start (polyrlm.spares); in the host, nothing.
        return bool(getattr(config, "worker", True))

    def __init__(self, subcalls: SubCalls, config: EnvConfig | None = None) -> None:
        super().__init__(subcalls, config)
        load_duckdb()  # a clear error here, before any process starts
        self._dir = Path(tempfile.mkdtemp(prefix="polyrlm-sql-"))
        # The directory (spill files, the shipped context) goes even when
        # close() is never called.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._closed = False
        self._loaded = False
        self._lock = threading.Lock()  # loading happens once
        self.bridge: Any = None
        cfg = self.config
        where = "a worker process" if cfg.worker else "the host process"
        settings = Settings(
            folder=str(self._dir),
            threads=cfg.threads,
            memory_limit_bytes=cfg.memory_limit_bytes,
            temp_limit_bytes=cfg.temp_limit_bytes,
            flavour=f"DuckDB in {where}; the context read-only, no files written",
            tools=tuple(t.record() for t in getattr(subcalls, "tools", ())),
        )
        try:
            self.db: _Database = self._open(settings)
        except BaseException:
            self.close()
            raise

    def _open(self, settings: Settings) -> _Database:
        if not self.config.worker:
            return _InHost(self.subcalls, settings)
        from polyrlm.backends.sql.process import WorkerDatabase
        from polyrlm.bridge import Bridge

        self.bridge = Bridge(self.subcalls)
        return WorkerDatabase(
            settings, self.config.worker_memory_bytes, self.bridge.env, self.config.start_timeout_s
        )

    # -- the context --

    def load_context(self, context: Any) -> None:
        with self._lock:
            if self._loaded:
                raise ConfigError("the sql environment already holds a context; make a new one")
            self.db.load(context)
            self._loaded = True

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load_context(None)

    # -- running code --

    def execute(self, code: str) -> ExecResult:
        self._ensure_loaded()
        return self.db.execute(code, self.exec_limit_s(), self.config.capture_limit_chars)

    def execute_part(self, code: str) -> ExecResult:
        self._ensure_loaded()
        limit = self.config.capture_limit_chars
        return self.db.execute(code, self.exec_limit_s(), limit, show_result=False)

    def ready_statements(self, code: str) -> int:
        return sql_ready(code)

    def read_state(self) -> State:
        self._ensure_loaded()
        return self.db.state()

    def prompt_guide(self) -> str:
        self._ensure_loaded()
        return self.db.guide(self.config.exec_timeout_s)

    def answer_code(self, text: str) -> str | None:
        return "SELECT final('" + text.replace("'", "''") + "');"

    def compact_guide(self) -> str:
        self._ensure_loaded()
        return self.db.guide(self.config.exec_timeout_s, compact=True)

    def answer_guide(self, answer_type: AnswerType) -> str:
        return sql_answer_guide(answer_type)

    def tools_guide(self, tools: Sequence[Tool]) -> str:
        return sql_tools_guide(tools)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
        if self.bridge is not None:
            self.bridge.close()
        self._cleanup()
