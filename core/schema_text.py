"""JSON Schemas shown to a model: as Python types, or as compact JSON.

Typed answers and user tools are described to the root in the language of
its environment. Every description is made from the JSON Schema (pydantic's,
or the user's own), so a replay, which has only the recorded schema, shows
the very same text. Backends of other languages render the schema their own
way (the SQL backend as DuckDB types).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SCHEMA_TEXT_MAX_CHARS", "compact_json", "python_declarations", "python_type"]

#: Characters of one schema's rendering kept in a prompt.
SCHEMA_TEXT_MAX_CHARS = 6_000

_PRIMITIVES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "null": "None",
}


def compact_json(schema: Any) -> str:
    """The schema as one-line JSON, cut at :data:`SCHEMA_TEXT_MAX_CHARS`."""
    text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= SCHEMA_TEXT_MAX_CHARS else text[:SCHEMA_TEXT_MAX_CHARS] + " ..."


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _named_object(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" and bool(schema.get("properties"))


def python_type(schema: Any, names: dict[int, str] | None = None) -> str:
    """A Python annotation for ``schema``: ``list[Pet]``, ``str | None``,
    ``Literal['a', 'b']``, ``dict[str, int]``. Objects with properties are
    named by their ``$ref`` or title (declared by :func:`python_declarations`)."""
    names = names or {}
    if not isinstance(schema, dict) or not schema:
        return "Any"
    if "$ref" in schema:
        return _ref_name(str(schema["$ref"]))
    if id(schema) in names:
        return names[id(schema)]
    if "const" in schema:
        return f"Literal[{schema['const']!r}]"
    if "enum" in schema:
        return "Literal[" + ", ".join(repr(v) for v in schema["enum"]) + "]"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(dict.fromkeys(python_type(s, names) for s in schema[key]))
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(python_type({**schema, "type": k}, names) for k in kind)
    if kind == "array":
        items = schema.get("prefixItems")
        if items:
            return "tuple[" + ", ".join(python_type(s, names) for s in items) + "]"
        return f"list[{python_type(schema.get('items', {}), names)}]"
    if kind == "object":
        if _named_object(schema):
            return str(schema.get("title") or "dict[str, Any]")
        extra = schema.get("additionalProperties")
        return f"dict[str, {python_type(extra if isinstance(extra, dict) else {}, names)}]"
    return _PRIMITIVES.get(str(kind), "Any")


def _declaration(name: str, schema: dict[str, Any], names: dict[int, str]) -> str:
    required = set(schema.get("required", ()))
    lines = [f"class {name}(TypedDict):"]
    if schema.get("description"):
        lines.append(f"    # {schema['description']}")
    for field, sub in schema.get("properties", {}).items():
        kind = python_type(sub, names)
        if field not in required:
            kind = f"NotRequired[{kind}]"
        note = sub.get("description") if isinstance(sub, dict) else None
        lines.append(f"    {field}: {kind}" + (f"  # {note}" if note else ""))
    return "\n".join(lines)


def _inline_objects(schema: Any, hint: str, found: list[tuple[str, dict[str, Any]]]) -> None:
    """Objects with properties written inline (not by ``$ref``), deepest first."""
    if not isinstance(schema, dict):
        return
    for field, sub in (schema.get("properties") or {}).items():
        _inline_objects(sub, field, found)
    for key in ("items", "additionalProperties"):
        _inline_objects(schema.get(key), hint, found)
    for key in ("anyOf", "oneOf", "prefixItems"):
        for sub in schema.get(key) or ():
            _inline_objects(sub, hint, found)
    if _named_object(schema):
        found.append((str(schema.get("title") or hint.title().replace("_", "")), schema))


def python_declarations(schema: dict[str, Any]) -> tuple[str, str]:
    """``(declarations, annotation)``: ``TypedDict`` classes for every named
    object of ``schema`` (its ``$defs`` first, then objects written inline,
    the innermost first), and the annotation of the whole, e.g.
    ``("class Person(TypedDict): ...", "list[Person]")``."""
    names: dict[int, str] = {}
    found: list[tuple[str, dict[str, Any]]] = []
    for def_name, sub in (schema.get("$defs") or {}).items():
        _inline_objects(sub, def_name, found)
        if found and found[-1][1] is sub:
            found[-1] = (def_name, sub)
    _inline_objects(schema, "Answer", found)
    for name, sub in found:
        names[id(sub)] = name
    blocks = [_declaration(name, sub, names) for name, sub in found]
    annotation = python_type(schema, names)
    text = "\n".join(blocks)
    if len(text) > SCHEMA_TEXT_MAX_CHARS:
        text = text[:SCHEMA_TEXT_MAX_CHARS] + "\n# ... (cut)"
    return text, annotation
