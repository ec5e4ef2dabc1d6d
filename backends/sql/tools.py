"""The user's tools as DuckDB scalar functions, vectorised like ``llm()``.

Each tool is a hidden Arrow UDF (``__polyrlm_tool_<name>``) wrapped by a
macro of the tool's own name in the read-only ``ctx`` catalog, its
arguments typed from the tool's JSON Schemas (:mod:`.types`): DuckDB
refuses a call with the wrong types before anything runs, and its message
shows the signature (``area(width BIGINT, height BIGINT)``). A ``JSON``
argument takes JSON text or any DuckDB value (a STRUCT, a LIST: made JSON
with ``to_json``); a ``JSON`` result is DuckDB's JSON type.

DuckDB hands the UDF a chunk of rows (up to 2,048); their calls go to the
host as one ``call_tools(name, [arguments, ...])`` (through the bridge in
the worker), which runs them concurrently. The tool runs on the host only.
NULL in a required argument gives NULL without a call; a NULL (or left
out) optional argument is not sent, so the tool's default applies. A call
that fails fails the statement with the tool's error (as a raise would in
Python): tools are functions, not models, and a NULL would hide a bug.

A tool whose name DuckDB already has (a function, a macro, a keyword), or
that DuckDB cannot register, stops the environment as it starts, with a
:class:`~polyrlm.errors.ConfigError` naming the tool.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from polyrlm.backends.sql.sources import HIDDEN_PREFIX
from polyrlm.backends.sql.types import JSON_TYPE, quote_name, scalar_type
from polyrlm.errors import ConfigError
from polyrlm.tools import TOOL_ARGUMENTS_MAX_BYTES, ToolError

__all__ = ["SqlTool", "SqlTools", "ToolCalls"]

#: One batch of calls, run in a helper thread (see ``SqlFunctions.gather``).
Gather = Callable[[Sequence[Callable[[], list[Any]]]], list[Any]]

_ARROW_TYPES = {
    "BIGINT": "int64",
    "DOUBLE": "float64",
    "VARCHAR": "large_string",
    "BOOLEAN": "bool_",
}
#: The type the hidden UDF takes and gives for JSON: its text.
JSON_TYPE_TEXT = "VARCHAR"


class ToolCalls(Protocol):
    """What the tool functions call: the host's batch of one tool's calls."""

    def call_tools(self, name: str, arguments: Sequence[Mapping[str, Any]]) -> list[Any]: ...


@dataclass(frozen=True)
class Param:
    name: str
    #: ``BIGINT``, ``DOUBLE``, ``VARCHAR``, ``BOOLEAN`` or ``JSON``.
    type: str
    required: bool
    schema: dict[str, Any]


@dataclass(frozen=True)
class SqlTool:
    """A tool as DuckDB sees it, made from its record (JSON data: it crosses
    to the worker; a replay rebuilds it the same)."""

    name: str
    description: str
    params: tuple[Param, ...]
    #: The result's DuckDB type.
    returns: str
    returns_schema: dict[str, Any]

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> SqlTool:
        parameters = dict(record.get("parameters") or {})
        defs = parameters.get("$defs", {})
        required = set(parameters.get("required", ()))
        params = tuple(
            Param(name, scalar_type(sub, defs) or JSON_TYPE, name in required, dict(sub))
            for name, sub in (parameters.get("properties") or {}).items()
        )
        returns = dict(record.get("returns") or {})
        kind = scalar_type(returns, returns.get("$defs", {})) or JSON_TYPE
        return cls(str(record["name"]), str(record.get("description", "")), params, kind, returns)

    @property
    def udf(self) -> str:
        return f"{HIDDEN_PREFIX}_tool_{self.name}"

    def signature(self) -> str:
        """``area(width BIGINT, height BIGINT) -> BIGINT`` (``:= NULL``: optional)."""
        args = []
        for p in self.params:
            default = "" if p.required else f" := {_default(p.schema)}"
            args.append(f"{quote_name(p.name)} {p.type}{default}")
        return f"{self.name}({', '.join(args)}) -> {self.returns}"

    def json_notes(self) -> list[tuple[str, dict[str, Any]]]:
        """``(name, JSON Schema)`` of each JSON argument and of a JSON ``result``."""
        notes = [(p.name, p.schema) for p in self.params if p.type == JSON_TYPE]
        if self.returns == JSON_TYPE and self.returns_schema:
            notes.append(("result", self.returns_schema))
        return notes

    def macro(self, catalog: str) -> str:
        """``CREATE MACRO`` of the public name; a default follows a default."""
        heads, args, optional = [], [], False
        for p in self.params:
            optional = optional or not p.required
            typed = "" if p.type == JSON_TYPE else f" {p.type}"
            ref = '"' + p.name.replace('"', '""') + '"'  # a keyword (where, limit) too
            heads.append(f"{ref}{typed}{' := NULL' if optional else ''}")
            args.append(_as_json_text(ref) if p.type == JSON_TYPE else ref)
        # A tool without arguments gets a constant one: the UDF learns the chunk's size.
        call = f"{self.udf}({', '.join(args) or 'true'})"
        if self.returns == JSON_TYPE:
            call = f"CAST({call} AS JSON)"
        return f'CREATE MACRO {catalog}."{self.name}"({", ".join(heads)}) AS {call}'


def _default(schema: dict[str, Any]) -> str:
    value = schema.get("default")
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return "NULL" if value is None else json.dumps(value)


def _as_json_text(ref: str) -> str:
    # JSON text stays as it is; any other value (STRUCT, LIST, number) becomes its JSON.
    return (
        f"CASE WHEN typeof({ref}) IN ('VARCHAR', 'JSON') THEN CAST({ref} AS VARCHAR) "
        f"ELSE CAST(to_json({ref}) AS VARCHAR) END"
    )


def _pa() -> Any:
    return importlib.import_module("pyarrow")


def _pc() -> Any:
    return importlib.import_module("pyarrow.compute")


class SqlTools:
    """The tool functions of one database."""

    def __init__(self, calls: ToolCalls, records: Sequence[Mapping[str, Any]], gather: Gather):
        self.calls = calls
        self.gather = gather
        self.tools = tuple(SqlTool.of(r) for r in records)

    def register(self, conn: Any) -> None:
        """Register the hidden UDFs; a clash or a failure names the tool."""
        taken = {
            str(name).lower()
            for (name,) in conn.sql(
                "SELECT DISTINCT function_name FROM duckdb_functions()"
            ).fetchall()
        }
        keywords = {
            str(name).lower()
            for (name,) in conn.sql(
                "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'"
            ).fetchall()
        }
        seen: set[str] = set()
        for t in self.tools:
            low = t.name.lower()
            if low in taken or low in keywords or low in seen or low.startswith(HIDDEN_PREFIX):
                what = "an SQL keyword" if low in keywords else "the name of a DuckDB function"
                if low in seen:
                    what = "the name of another tool (DuckDB names ignore case)"
                elif low.startswith(HIDDEN_PREFIX):
                    what = "a name the environment keeps for itself"
                raise ConfigError(
                    f"tool {t.name!r} cannot be an SQL function: {t.name} is {what}; "
                    "give the tool another name (polyrlm.tool(fn, name=...))"
                )
            seen.add(low)
            try:
                conn.create_function(
                    t.udf,
                    self._udf(t),
                    [JSON_TYPE_TEXT if p.type == JSON_TYPE else p.type for p in t.params]
                    or ["BOOLEAN"],
                    JSON_TYPE_TEXT if t.returns == JSON_TYPE else t.returns,
                    type="arrow",
                    null_handling="special",  # NULLs are decided here, per argument
                    side_effects=True,  # every call is real (and recorded)
                )
            except Exception as exc:
                raise ConfigError(f"tool {t.name!r} cannot be an SQL function: {exc}") from None

    def create_macros(self, conn: Any, catalog: str) -> None:
        """The public functions, in ``catalog``; a failure names the tool."""
        for t in self.tools:
            try:
                conn.execute(t.macro(catalog))
            except Exception as exc:
                raise ConfigError(f"tool {t.name!r} cannot be an SQL function: {exc}") from None

    def _udf(self, t: SqlTool) -> Callable[..., Any]:
        def run(*columns: Any) -> Any:
            return self._call(t, columns)

        # DuckDB counts the function's parameters: give it the tool's arity.
        arity = max(len(t.params), 1)
        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(f"a{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(arity)]
        )
        return run

    def _call(self, t: SqlTool, columns: Sequence[Any]) -> Any:
        pa = _pa()
        size = len(columns[0])
        columns = columns[: len(t.params)]  # without the constant of a tool without arguments
        for p, column in zip(t.params, columns, strict=True):
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                longest = _pc().max(_pc().binary_length(column)).as_py() or 0
                if longest > TOOL_ARGUMENTS_MAX_BYTES:
                    raise ToolError(
                        f"{t.name}(): argument {p.name} is {longest:,} bytes; a call's arguments "
                        f"may take at most {TOOL_ARGUMENTS_MAX_BYTES:,}"
                    )
        values = [column.to_pylist() for column in columns]
        rows: list[int] = []
        arguments: list[dict[str, Any]] = []
        for i in range(size):
            row = [v[i] for v in values]
            if any(v is None and p.required for p, v in zip(t.params, row, strict=True)):
                continue  # NULL in a required argument: NULL, no call
            arguments.append(
                {
                    p.name: _argument(t, p, v)
                    for p, v in zip(t.params, row, strict=True)
                    if v is not None
                }
            )
            rows.append(i)
        out: list[Any] = [None] * size
        if arguments:
            (results,) = self.gather([lambda: self.calls.call_tools(t.name, arguments)])
            if isinstance(results, Exception):
                raise ToolError(_reason(t, results))
            if not isinstance(results, list) or len(results) != len(arguments):
                raise ToolError(f"{t.name}(): the host did not send one result per call")
            for i, result in zip(rows, results, strict=True):
                out[i] = _result(t, result)
        kind = _ARROW_TYPES.get(t.returns, "large_string")
        try:
            return pa.array(out, type=getattr(pa, kind)())
        except (OverflowError, TypeError, ValueError, pa.ArrowException) as exc:
            raise ToolError(
                f"{t.name}() returned a value that is not a {t.returns}: {exc}"
            ) from None


def _reason(t: SqlTool, exc: Exception) -> str:
    """The host's words, which name the tool (``call 2 of 9: area: ...``)."""
    text = str(exc).removeprefix("ToolError: ")
    return text if t.name in text else f"{t.name}(): {text}"


def _argument(t: SqlTool, p: Param, value: Any) -> Any:
    if p.type != JSON_TYPE:
        return value
    try:
        return json.loads(value)
    except ValueError:
        shown = value if len(value) <= 60 else value[:60] + "..."
        raise ToolError(
            f"{t.name}(): argument {p.name} must be JSON text (or a value, e.g. a STRUCT or a "
            f"LIST), not {shown!r}"
        ) from None


def _result(t: SqlTool, value: Any) -> Any:
    if value is None:
        return None
    if t.returns == JSON_TYPE:
        return json.dumps(value, ensure_ascii=False)
    if t.returns == "BIGINT" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ToolError(f"{t.name}() returned {value!r}, not a BIGINT")
    if t.returns == "DOUBLE" and not isinstance(value, int | float):
        raise ToolError(f"{t.name}() returned {value!r}, not a DOUBLE")
    if t.returns == "BOOLEAN" and not isinstance(value, bool):
        raise ToolError(f"{t.name}() returned {value!r}, not a BOOLEAN")
    if t.returns == "VARCHAR" and not isinstance(value, str):
        raise ToolError(f"{t.name}() returned {value!r}, not a VARCHAR")
    return value
