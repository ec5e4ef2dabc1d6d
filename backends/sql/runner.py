"""Running one block of SQL: statements in order, each under the block's
time limit, the last one's result rendered.

The whole block is parsed by DuckDB first (a syntax error runs nothing) and
checked against :data:`REFUSED` (by DuckDB's own statement types, not by
pattern matching); then each statement runs with a timer armed for the time
left of the block's ``exec_timeout_s``: when it fires, it cancels the UDFs
waiting on sub-calls and calls ``interrupt()`` on the connection. DuckDB
stops the query, the connection stays usable, and what earlier statements
made is kept (DuckDB commits each statement on its own). The statement that
fails (or is interrupted) ends the block; its error is DuckDB's own text,
cut to :data:`~polyrlm.backends.sql.limits.SQL_ERROR_MAX_CHARS` as soon as it
reaches Python (``error(repeat('e', 3e8))`` keeps 20,000 characters, not
300 MB).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from polyrlm.backends.sql.functions import SqlFunctions
from polyrlm.backends.sql.limits import SQL_ERROR_MAX_CHARS, cut_text
from polyrlm.backends.sql.render import (
    Collected,
    cap,
    collect,
    collect_rows,
    format_result,
    stream,
)
from polyrlm.backends.sql.sources import HIDDEN_PREFIX
from polyrlm.environment import plain_answer
from polyrlm.records import ExecResult

__all__ = ["REFUSED", "REFUSED_SHOWN", "REINTERRUPT_S", "Watchdog", "run_block"]

_NO_FILES = (
    "this environment writes no files and reads only the context: keep results in tables "
    "(CREATE TABLE name AS SELECT ...) and read the context through its tables"
)
#: Statement types refused before anything runs, and why.
REFUSED = {
    "ATTACH": "the databases are fixed: the context is attached read-only and stays so",
    "DETACH": "the databases are fixed: the context is attached read-only and stays so",
    "COPY": _NO_FILES,
    "COPY_DATABASE": _NO_FILES,
    "EXPORT": _NO_FILES,
    "LOAD": "extensions cannot be installed or loaded here",
    "PREPARE": "prepared statements are not available here; write the statement itself",
}
_OOM = (
    "\n-- This environment's memory and spill limits are fixed (settings cannot change): "
    "work on fewer rows or smaller values at once."
)
#: Seconds between repeated interrupts of a statement past its deadline.
REINTERRUPT_S = 0.1
#: How the guide names the refused statements.
REFUSED_SHOWN = "ATTACH, DETACH, COPY, EXPORT, INSTALL, LOAD, PREPARE and USE"
_CHANGES = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE_INTO", "CREATE"})
_USE = re.compile(r"use\b", re.IGNORECASE)
_FINAL_CALL = re.compile(r"\bfinal\s*\(", re.IGNORECASE)


def _refusal(statements: list[Any]) -> str | None:
    for number, stmt in enumerate(statements, 1):
        kind = stmt.type.name
        text = str(stmt.query).strip()
        where = f"statement {number} ({text[:60]}{'...' if len(text) > 60 else ''})"
        if kind in REFUSED:
            return (
                f"Refused {where}: {kind} statements are not allowed; {REFUSED[kind]}. Nothing ran."
            )
        if kind == "SET" and _USE.match(text):
            return (
                f"Refused {where}: USE is not allowed; the default database is fixed (your "
                "tables go to main; name other catalogs in full). Nothing ran."
            )
        if HIDDEN_PREFIX in text.lower():
            return (
                f"Refused {where}: names starting with {HIDDEN_PREFIX} belong to the "
                "environment. Nothing ran."
            )
    return None


class Watchdog:
    """Interrupts the running statement at its deadline, and again every
    :data:`REINTERRUPT_S` (one sent while DuckDB was still starting the
    query would be lost) until the statement ends. One thread for the
    connection's life: a thread per statement might not start once a
    statement has used up the worker's address space."""

    def __init__(self, conn: Any, functions: SqlFunctions) -> None:
        self.conn = conn
        self.functions = functions
        #: The armed statement's deadline was reached.
        self.fired = False
        self._deadline: float | None = None
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name="polyrlm-sql-timer")
        self._thread.start()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self.fired = True
                self.functions.cancelled.set()
                self.conn.interrupt()
                self._cond.wait(REINTERRUPT_S)

    @contextlib.contextmanager
    def armed(self, seconds: float) -> Iterator[Watchdog]:
        """Interrupts past ``seconds`` from now until the block ends; none after."""
        with self._cond:
            self.fired = False
            self._deadline = time.monotonic() + max(seconds, 0.0)
            self._cond.notify()
        try:
            yield self
        finally:
            with self._cond:
                self._deadline = None
                self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()


@functools.cache
def _relation_keeps_counts() -> bool:
    """DuckDB >= 2 keeps what any statement returned on the relation conn.sql() gives."""
    return int(importlib.import_module("duckdb").__version__.split(".")[0]) >= 2


def _error_text(exc: BaseException) -> str:
    """An exception's text, cut before anything else copies it."""
    if isinstance(exc, MemoryError):  # Python's own, past the worker's address space
        return "Out of Memory Error: the result does not fit in this environment's memory." + _OOM
    text = cut_text(str(exc) or type(exc).__name__, SQL_ERROR_MAX_CHARS, "error")
    return text + _OOM if text.startswith("Out of Memory Error") else text


def _run(conn: Any, stmt: Any, value_chars: int) -> Collected | None:
    """Run one statement; what it returned, streamed (None: nothing)."""
    if not _relation_keeps_counts() and stmt.type.name in _CHANGES:
        # DuckDB 1.x runs a change through conn.sql() at once and drops its row count.
        conn.execute(stmt)
        if not conn.description:
            return None
        return collect_rows([d[0] for d in conn.description], conn.fetchall())
    relation = conn.sql(stmt)
    return None if relation is None else collect(stream(relation), value_chars)


def run_block(
    conn: Any,
    functions: SqlFunctions,
    watchdog: Watchdog,
    code: str,
    *,
    timeout_s: float,
    limit_chars: int,
    show_result: bool = True,
) -> ExecResult:
    """Run ``code`` on ``conn``; never raises for the SQL's own errors.
    ``show_result=False``: a leading part of a pipelined block, whose last
    statement's result is not shown (a block shows only its own last one's)."""
    started = time.perf_counter()
    deadline = started + timeout_s
    functions.begin_block()
    body, error, timed_out, cut = "", None, False, 0
    try:
        statements = list(conn.extract_statements(code))
    except Exception as exc:  # DuckDB's parser error, as it words it
        statements, error = [], _error_text(exc)
    if error is None and not statements:
        error = "No SQL statement in the block."
    if error is None:
        error = _refusal(statements)
    if error is None:
        total = len(statements)
        for number, stmt in enumerate(statements, 1):
            left = deadline - time.perf_counter()
            if left <= 0:
                timed_out = True
                error = (
                    f"TimeoutError: the block ran longer than {timeout_s:g} s before statement "
                    f"{number} of {total}, which did not run; tables made before it are kept."
                )
                break
            functions.begin_statement()
            with watchdog.armed(left) as timer:
                try:
                    collected = _run(conn, stmt, limit_chars)
                    shown = "OK" if collected is None else format_result(stmt.type.name, collected)
                    left_out = 0 if collected is None else collected.first_cut
                except Exception as exc:
                    functions.end_statement(False)
                    where = f"statement {number} of {total}" if total > 1 else "the statement"
                    if timer.fired:
                        timed_out = True
                        error = (
                            f"TimeoutError: {where} was interrupted: the block ran longer than "
                            f"{timeout_s:g} s. Tables made before it are kept; make the query "
                            "cheaper (filter first, LIMIT, fewer rows into llm())."
                        )
                    else:
                        error = _error_text(exc)
                        if total > 1:
                            kept = "the ones before it ran, " if number > 1 else ""
                            error = (
                                f"Error in {where} ({kept}the ones after it did not run):\n" + error
                            )
                    body, cut = "", 0  # only a result of the block's last statement is shown
                    break
            functions.end_statement(True)
            functions.cancelled.clear()  # a timer that fired as the statement ended
            body, cut = shown, left_out
    if not show_result:
        body, cut = "", 0
    notes = functions.notes()
    if error is None and not functions.final_called and _FINAL_CALL.search(code):
        notes.append(
            "-- final() did not run: the query that calls it returned no rows, "
            "so the answer is not set."
        )
    output, dropped = cap(body, notes, limit_chars)
    ready = functions.ready
    return ExecResult(
        output=output,
        error=error,
        truncated_chars=dropped + cut,
        duration_s=time.perf_counter() - started,
        answer_ready=ready,
        answer=plain_answer(functions.answer) if ready else None,
        timed_out=timed_out,
    )
