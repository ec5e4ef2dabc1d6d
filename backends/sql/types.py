"""JSON Schemas as DuckDB types: a tool's arguments and result, the answer's type.

A tool's argument or result of type integer, number, string or boolean is
a ``BIGINT``, ``DOUBLE``, ``VARCHAR`` or ``BOOLEAN`` (an optional one, ``X |
None``, the same: SQL's NULL is the None); anything else is ``JSON`` (JSON
text; DuckDB's JSON type is a VARCHAR). The answer's type is shown whole,
as the DuckDB value ``final()`` turns into that JSON (``STRUCT(name VARCHAR,
tags VARCHAR[])``); what a DuckDB type cannot say (enums, bounds, optional
fields) the guide leaves to the JSON Schema it shows beside it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["JSON_TYPE", "SCALAR_TYPES", "duckdb_type", "quote_name", "scalar_type", "skeleton"]

#: JSON Schema types that are DuckDB scalar types.
SCALAR_TYPES = {"integer": "BIGINT", "number": "DOUBLE", "string": "VARCHAR", "boolean": "BOOLEAN"}
#: What any other schema is: JSON text.
JSON_TYPE = "JSON"
#: Levels of nesting shown as DuckDB types; deeper is JSON.
MAX_DEPTH = 8

_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")


def quote_name(name: str) -> str:
    """A field or argument name as DuckDB reads it (quoted unless plain)."""
    if _PLAIN.fullmatch(name):
        return name
    return '"' + name.replace('"', '""') + '"'


def _resolve(schema: Any, defs: dict[str, Any], seen: frozenset[str]) -> tuple[Any, frozenset[str]]:
    """``schema`` with a local ``$ref`` followed (a recursive one is left as is)."""
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen or name not in defs:
            return {}, seen
        schema, seen = defs[name], seen | {name}
    return schema, seen


def _not_null(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The one non-null choice of ``X | None`` (``anyOf``/``oneOf``/a type list)."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            choices = [s for s in schema[key] if s != {"type": "null"}]
            return choices[0] if len(choices) == 1 and isinstance(choices[0], dict) else None
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return {**schema, "type": kinds[0]} if len(kinds) == 1 else None
    return schema


def _value_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return "DOUBLE"
    return "VARCHAR" if isinstance(value, str) else None


def _flat(schema: Any, defs: dict[str, Any], seen: frozenset[str]) -> Any:
    schema, seen = _resolve(schema, defs, seen)
    if not isinstance(schema, dict):
        return {}, seen
    inner = _not_null(schema)
    if inner is None:
        return {}, seen
    if inner is not schema:
        return _flat(inner, defs, seen)
    return schema, seen


def scalar_type(schema: Any, defs: dict[str, Any] | None = None) -> str | None:
    """``BIGINT``/``DOUBLE``/``VARCHAR``/``BOOLEAN`` for a scalar schema, else None."""
    flat, _ = _flat(schema, defs or {}, frozenset())
    if "const" in flat:
        return _value_type(flat["const"])
    if "enum" in flat:
        kinds = {_value_type(v) for v in flat["enum"]}
        return kinds.pop() if len(kinds) == 1 and None not in kinds else None
    return SCALAR_TYPES.get(str(flat.get("type")))


def duckdb_type(schema: Any, defs: dict[str, Any] | None = None) -> str:
    """The DuckDB type whose ``to_json`` has the shape of ``schema``."""
    return _type(schema, defs if defs is not None else _defs(schema), frozenset(), 0)


def _defs(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    return {**schema.get("definitions", {}), **schema.get("$defs", {})}


def _type(schema: Any, defs: dict[str, Any], seen: frozenset[str], depth: int) -> str:
    scalar = scalar_type(schema, defs)
    if scalar is not None:
        return scalar
    flat, seen = _flat(schema, defs, seen)
    if depth >= MAX_DEPTH:
        return JSON_TYPE
    kind = flat.get("type")
    if kind == "array" and "prefixItems" not in flat:
        return _type(flat.get("items", {}), defs, seen, depth + 1) + "[]"
    if kind == "object" or "properties" in flat:
        fields = flat.get("properties") or {}
        if fields:
            inner = ", ".join(
                f"{quote_name(name)} {_type(sub, defs, seen, depth + 1)}"
                for name, sub in fields.items()
            )
            return f"STRUCT({inner})"
        extra = flat.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"MAP(VARCHAR, {_type(extra, defs, seen, depth + 1)})"
    return JSON_TYPE


def skeleton(schema: Any, defs: dict[str, Any] | None = None) -> str:
    """A DuckDB literal of the schema's shape with ``...`` for every value:
    ``{'name': ..., 'tags': [...]}`` (for a guide: not runnable as it is)."""
    return _skeleton(schema, defs if defs is not None else _defs(schema), frozenset(), 0)


def _skeleton(schema: Any, defs: dict[str, Any], seen: frozenset[str], depth: int) -> str:
    flat, seen = _flat(schema, defs, seen)
    if depth < 3 and flat.get("type") == "array" and "prefixItems" not in flat:
        inner = _skeleton(flat.get("items", {}), defs, seen, depth + 1)
        return f"[{inner}, ...]" if inner != "..." else "[...]"
    fields = flat.get("properties") or {}
    if depth < 3 and fields:
        quoted = ", ".join(
            "'" + name.replace("'", "''") + "': " + _skeleton(sub, defs, seen, depth + 1)
            for name, sub in fields.items()
        )
        return "{" + quoted + "}"
    return "..."
