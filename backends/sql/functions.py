"""The SQL functions the model calls: ``llm()``, ``rlm()`` and ``final()``.

Each is a vectorised (Arrow) Python UDF under a hidden name, wrapped by a
macro of the public name (:mod:`.specs`: macros give ``llm(prompt)``,
``llm(prompt, model)`` ... as overloads, and cast any argument type; the
user's tools are in :mod:`.tools`). DuckDB
hands a UDF a batch of rows (up to 2,048); ``llm()`` sends the whole batch
to the broker at once (``SubCalls.llm_batch``), so the rows' sub-calls run
concurrently, and returns the replies in row order. A NULL prompt gives NULL
without a call; a failed call gives NULL and is counted for the note shown
under the result.

A typed sub-call: ``llm(prompt, schema)`` with a JSON Schema (JSON text, or
a STRUCT made JSON) returns the reply, validated on the host, as JSON text.
A second argument that starts with ``{`` is a schema (no model name does),
any other the model's name, so ``llm(prompt, model)`` works as before;
``llm(prompt, model, schema)`` takes both. Rows go to the host in one
``llm_batch`` per (model, schema) of the chunk.

The UDFs block in DuckDB's threads while the broker works; they wait in a
helper thread and poll :attr:`SqlFunctions.cancelled`, so a statement's
timeout stops them within :data:`UDF_POLL_S` (calls already sent finish in
the background and their replies are dropped).

``final(value)`` holds its value until the statement succeeds, then sets
the answer: a statement that fails (or is interrupted) sets nothing. It must
see exactly one row per statement: over several rows it fails, so an answer
never depends on which row DuckDB happened to evaluate last.

Sizes are checked inside Arrow, before a value becomes a Python object: a
prompt longer than :data:`~polyrlm.backends.sql.limits.SQL_PROMPT_MAX_CHARS`
gives NULL (a failed call), an answer longer than
:data:`~polyrlm.backends.sql.limits.SQL_ANSWER_MAX_CHARS` fails the statement.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from polyrlm.backends.sql.limits import (
    SQL_ANSWER_MAX_CHARS,
    SQL_NOTE_ERROR_CHARS,
    SQL_PROMPT_MAX_CHARS,
    cut_text,
)
from polyrlm.backends.sql.specs import FUNCTIONS, FunctionSpec, udf_name
from polyrlm.environment import SubCallFailure

__all__ = [
    "FAILURES_LISTED",
    "FUNCTIONS",
    "UDF_POLL_S",
    "BatchCalls",
    "FunctionSpec",
    "SqlFunctions",
    "StatementInterrupted",
]

#: Seconds between two checks, by a UDF waiting on sub-calls, for an interrupt.
UDF_POLL_S = 0.05
#: Distinct sub-call errors quoted per function in the note under a result.
FAILURES_LISTED = 3


class BatchCalls(Protocol):
    """What the SQL functions call: the blocking batches of
    :class:`~polyrlm.environment.SubCalls` (the host's, or the bridge's in a worker)."""

    def llm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: dict[str, Any] | None = None
    ) -> list[Any]: ...

    def rlm_batch(
        self, prompts: Sequence[str], contexts: Sequence[Any] | None = None
    ) -> list[str]: ...

    def call_tools(self, name: str, arguments: Sequence[Mapping[str, Any]]) -> list[Any]: ...


#: One batch of sub-calls, run in a helper thread.
Job = Callable[[], list[Any]]
#: The rows of one batch, its job, and whether its replies are JSON data (typed).
Group = tuple[list[int], Job, bool]


class StatementInterrupted(Exception):
    """Raised inside a UDF when its statement's time is up."""


def _schema(text: str) -> dict[str, Any]:
    """A typed call's schema (JSON text of an object); ValueError says why not."""
    try:
        schema = json.loads(text)
    except ValueError:
        shown = text if len(text) <= 80 else text[:80] + "..."
        raise ValueError(f"the schema is not JSON: {shown!r}") from None
    if not isinstance(schema, dict):
        raise ValueError("the schema must be a JSON object (a JSON Schema)")
    return schema


def _pa() -> Any:
    return importlib.import_module("pyarrow")


def _pc() -> Any:
    return importlib.import_module("pyarrow.compute")


class SqlFunctions:
    """The UDFs of one environment, with the answer and the failure tally."""

    def __init__(self, subcalls: BatchCalls) -> None:
        self.subcalls = subcalls
        #: Set by the statement timer: waiting UDFs give up.
        self.cancelled = threading.Event()
        self.answer: Any = None
        self.ready = False
        #: True once final() ran in the current block.
        self.final_called = False
        self._lock = threading.Lock()
        self._pending: list[Any] = []
        self._final_rows = 0
        self._calls: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._errors: dict[str, list[str]] = {}

    # -- registration --

    def register(self, conn: Any) -> None:
        """Register the hidden UDFs on ``conn`` (a DuckDB connection)."""
        text = "VARCHAR"
        for name, fn, arity in (("llm", self._llm, 3), ("rlm", self._rlm, 2)):
            conn.create_function(
                udf_name(name),
                fn,
                [text] * arity,
                text,
                type="arrow",
                null_handling="special",  # a NULL model or context is meaningful
                side_effects=True,  # never constant-folded or cached: each call is real
            )
        conn.create_function(
            udf_name("final"),
            self._final,
            [text],
            text,
            type="arrow",
            null_handling="special",
            side_effects=True,
        )

    @staticmethod
    def macros(catalog: str) -> list[str]:
        """``CREATE MACRO`` statements for the public names, in ``catalog``."""
        return [f"CREATE MACRO {catalog}.{f.name}{f.macro}" for f in FUNCTIONS]

    # -- per block and per statement --

    def begin_block(self) -> None:
        self.cancelled.clear()
        self.final_called = False
        with self._lock:
            self._calls.clear()
            self._failed.clear()
            self._errors.clear()

    def begin_statement(self) -> None:
        with self._lock:
            self._pending = []
            self._final_rows = 0

    def end_statement(self, ok: bool) -> None:
        """Commit final()'s value when the statement succeeded."""
        with self._lock:
            if ok and self._pending:
                self.answer = self._pending[0]
                self.ready = True
            self._pending = []

    def notes(self) -> list[str]:
        """One line per function whose calls failed in this block."""
        out = []
        with self._lock:
            for name in sorted(self._failed):
                errors = "; ".join(self._errors.get(name, []))
                out.append(
                    f"-- {name}(): {self._failed[name]:,} of {self._calls[name]:,} calls failed "
                    f"and gave NULL. First errors: {errors}"
                )
        return out

    # -- the UDFs --

    def gather(self, jobs: Sequence[Job]) -> list[list[Any] | Exception]:
        """Run ``jobs`` at once in helper threads; wait for all of them, or
        raise :class:`StatementInterrupted` when the statement is cancelled."""
        results: list[list[Any] | Exception] = [RuntimeError("no result")] * len(jobs)
        done = threading.Semaphore(0)

        def work(i: int, job: Job) -> None:
            try:
                results[i] = job()
            except Exception as exc:  # reported per row, as a failed call
                results[i] = exc
            finally:
                done.release()

        for i, job in enumerate(jobs):
            threading.Thread(target=work, args=(i, job), daemon=True, name="polyrlm-sql").start()
        for _ in jobs:
            while not done.acquire(timeout=UDF_POLL_S):
                if self.cancelled.is_set():
                    raise StatementInterrupted("the statement's time is up")
        return results

    def _fan_out(self, fn: str, size: int, groups: list[Group]) -> Any:
        """Run each group's batch at once; the replies land at the group's row
        indices (a typed group's as JSON text); rows in no group stay NULL."""
        out: list[str | None] = [None] * size
        results = self.gather([job for _, job, _ in groups])
        for (idx, _, typed), result in zip(groups, results, strict=True):
            self._tally(fn, idx, result, out, typed)
        pa = _pa()
        return pa.array(out, type=pa.large_string())

    def _tally(
        self,
        fn: str,
        idx: list[int],
        result: list[Any] | Exception,
        out: list[str | None],
        typed: bool = False,
    ) -> None:
        with self._lock:
            self._calls[fn] += len(idx)
            if isinstance(result, Exception):
                self._fail(fn, len(idx), f"{type(result).__name__}: {result}")
                return
            for i, reply in zip(idx, result, strict=True):
                if isinstance(reply, SubCallFailure):
                    self._fail(fn, 1, reply.error)
                else:
                    out[i] = json.dumps(reply, ensure_ascii=False) if typed else str(reply)

    def _fail(self, fn: str, count: int, error: str) -> None:
        self._failed[fn] += count
        error = cut_text(error, SQL_NOTE_ERROR_CHARS, "error")
        listed = self._errors.setdefault(fn, [])
        if len(listed) < FAILURES_LISTED and error not in listed:
            listed.append(error)

    def _short(self, fn: str, prompts: Any) -> Any:
        """``prompts`` with the ones over SQL_PROMPT_MAX_CHARS made NULL (and
        counted as failed calls), decided before any is copied into Python."""
        pc = _pc()
        too_long = pc.fill_null(pc.greater(pc.utf8_length(prompts), SQL_PROMPT_MAX_CHARS), False)
        count = int(pc.sum(too_long).as_py() or 0)
        if not count:
            return prompts
        with self._lock:
            self._calls[fn] += count
            self._fail(
                fn, count, f"a prompt is longer than {SQL_PROMPT_MAX_CHARS:,} characters; cut it"
            )
        return pc.if_else(too_long, _pa().scalar(None, prompts.type), prompts)

    def _llm(self, prompts: Any, models: Any, schemas: Any) -> Any:
        ps: list[str | None] = self._short("llm", prompts).to_pylist()
        by_call: dict[tuple[str | None, str | None], list[int]] = {}
        for i, (prompt, model, schema) in enumerate(
            zip(ps, models.to_pylist(), schemas.to_pylist(), strict=True)
        ):
            if prompt is None:
                continue
            if schema is None and model is not None and model.lstrip().startswith("{"):
                model, schema = None, model  # llm(prompt, schema): no model name starts with {
            by_call.setdefault((model, schema), []).append(i)

        def job(idx: list[int], model: str | None, schema: str | None) -> Job:
            texts = [ps[i] or "" for i in idx]
            if schema is None:  # untyped: SubCalls made before typed calls serve it too
                return lambda: self.subcalls.llm_batch(texts, model)
            parsed = _schema(schema)
            return lambda: self.subcalls.llm_batch(texts, model, parsed)

        groups: list[Group] = []
        for (model, schema), idx in by_call.items():
            try:
                groups.append((idx, job(idx, model, schema), schema is not None))
            except ValueError as exc:  # a schema that is not JSON: its rows fail
                with self._lock:
                    self._calls["llm"] += len(idx)
                    self._fail("llm", len(idx), str(exc))
        return self._fan_out("llm", len(ps), groups)

    def _rlm(self, prompts: Any, contexts: Any) -> Any:
        ps: list[str | None] = self._short("rlm", prompts).to_pylist()
        cs = [None if c is None else json.loads(c) for c in contexts.to_pylist()]
        idx = [i for i, p in enumerate(ps) if p is not None]

        def job() -> list[str]:
            return self.subcalls.rlm_batch([ps[i] or "" for i in idx], [cs[i] for i in idx])

        return self._fan_out("rlm", len(ps), [(idx, job, False)] if idx else [])

    def _final(self, values: Any) -> Any:
        if not len(values):
            return _pa().array([], type=_pa().large_string())
        with self._lock:
            self.final_called = True
            self._final_rows += len(values)
            if self._final_rows > 1:
                raise ValueError(
                    f"final() was called on {self._final_rows} rows; call it on exactly one "
                    "row: aggregate first, e.g. SELECT final(string_agg(x, ', ')) FROM t"
                )
            if not values[0].is_valid:
                raise ValueError("final(NULL): the answer must be a value, not NULL")
            size = int(_pc().utf8_length(values.slice(0, 1))[0].as_py())
            if size > SQL_ANSWER_MAX_CHARS:
                raise ValueError(
                    f"final(): the answer is {size:,} characters (as JSON); it may have at most "
                    f"{SQL_ANSWER_MAX_CHARS:,}: answer with less, or a summary of it"
                )
            text = str(values[0].as_py())
            value = json.loads(text)
            self._pending = [value]
        shown = value if isinstance(value, str) else text
        return _pa().array([shown], type=_pa().large_string())
