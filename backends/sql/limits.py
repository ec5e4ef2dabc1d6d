"""The sql backend's limits, each a named constant with its unit.

The defaults of :class:`~polyrlm.backends.sql.environment.SqlEnvironment.Config`
come from here, and so do the caps on what the host reads back from the
database (output, errors, the answer, the state, the guide).

Why two memory limits: DuckDB's ``memory_limit`` bounds its buffer manager
(tables, hash tables, sorts: past it they spill to the temporary directory,
at most ``max_temp_directory_size``), but not every allocation goes through
it: ``repeat('x', 2e9)`` builds a 2 GB string whatever ``memory_limit`` says.
Only the worker process's address space (``RLIMIT_AS``) bounds those; past
it DuckDB raises its own "Out of Memory Error" and the worker lives on.
"""

from __future__ import annotations

__all__ = [
    "SQL_ANSWER_MAX_CHARS",
    "SQL_ERROR_MAX_CHARS",
    "SQL_GUIDE_MAX_CHARS",
    "SQL_MEMORY_LIMIT_BYTES",
    "SQL_NAME_MAX_CHARS",
    "SQL_NOTE_ERROR_CHARS",
    "SQL_PROMPT_MAX_CHARS",
    "SQL_STATE_MAX_ITEMS",
    "SQL_TEMP_LIMIT_BYTES",
    "SQL_THREADS",
    "SQL_WORKER_BASE_BYTES",
    "SQL_WORKER_ENV_KEEP",
    "SQL_WORKER_ENV_SET",
    "SQL_WORKER_KILL_GRACE_S",
    "SQL_WORKER_MEMORY_BYTES",
    "SQL_WORKER_REQUEST_TIMEOUT_S",
    "SQL_WORKER_START_TIMEOUT_S",
    "cut_text",
]

_GiB = 1024**3

#: DuckDB worker threads (DuckDB's own default is one per core; each thread
#: can hold a large value of its own, so fewer threads bound memory too).
SQL_THREADS = 4
#: DuckDB's ``memory_limit``, in bytes: its buffer manager spills past it.
SQL_MEMORY_LIMIT_BYTES = 4 * _GiB
#: DuckDB's ``max_temp_directory_size``, in bytes: what spilling may write to
#: the environment's own temporary directory (removed on close).
SQL_TEMP_LIMIT_BYTES = 4 * _GiB
#: Address space of the worker process, in bytes (``RLIMIT_AS``): bounds what
#: DuckDB allocates outside its buffer manager.
SQL_WORKER_MEMORY_BYTES = 8 * _GiB
#: Address space the worker needs besides DuckDB's ``memory_limit``, in bytes:
#: the interpreter, numpy, pyarrow, DuckDB and its threads (measured: 0.55 GB
#: of VmSize with the context loaded, 2 threads, with SQL_WORKER_ENV_SET).
SQL_WORKER_BASE_BYTES = 1 * _GiB
#: Seconds the worker may take to start (interpreter, imports) and answer.
SQL_WORKER_START_TIMEOUT_S = 60.0
#: Seconds a request other than a block (loading the context, the state, the
#: guide) may take before the worker is taken for stuck and replaced.
SQL_WORKER_REQUEST_TIMEOUT_S = 600.0
#: Seconds past a block's time limit (the worker interrupts it itself) before
#: the worker is killed and started anew (under the core's ``exec_grace_s``).
SQL_WORKER_KILL_GRACE_S = 5.0
#: Host environment variables the worker inherits; nothing else (no API keys).
SQL_WORKER_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH")
#: Allocator settings of the worker: glibc's per-thread arenas and pyarrow's
#: mimalloc reserve address space up front that RLIMIT_AS counts (measured:
#: 2.2 GB of VmSize at start without these, 0.55 GB with them; RSS the same).
SQL_WORKER_ENV_SET = {"MALLOC_ARENA_MAX": "2", "ARROW_DEFAULT_MEMORY_POOL": "system"}

#: Characters of a failed statement's error kept (``error(repeat('e', 3e8))``).
SQL_ERROR_MAX_CHARS = 20_000
#: Characters of a sub-call's error quoted in the note under a result.
SQL_NOTE_ERROR_CHARS = 1_000
#: Characters of ``final()``'s value (as JSON) at most; a longer one fails.
SQL_ANSWER_MAX_CHARS = 4_000_000
#: Characters of one ``llm()`` prompt at most (no model reads more); a longer
#: one gives NULL, as a failed call, without being copied out of DuckDB.
SQL_PROMPT_MAX_CHARS = 4_000_000
#: Tables, views and variables listed by ``read_state`` at most.
SQL_STATE_MAX_ITEMS = 1_000
#: Characters of a table's name or type kept in the state.
SQL_NAME_MAX_CHARS = 300
#: Characters of the prompt guide accepted from the worker.
SQL_GUIDE_MAX_CHARS = 1_000_000


def cut_text(text: str, limit: int, what: str = "text") -> str:
    """``text`` cut to at most ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    note = f"\n[{what} cut: {len(text):,} characters in all]"
    return text[: max(limit - len(note), 0)] + note
