"""User tools: plain Python functions of the host, offered to the model's code.

``RLM(tools=[fn, ...])`` (or :func:`tool` for a name or a scope) exposes
each function to the environment in its own language: a function in Python
and WASM, a scalar function in SQL, a command in Bash. A tool always runs on
the host, never inside the sandbox: the environment sends its arguments as
JSON, they are validated against the function's type hints (pydantic), the
function runs, and its result, validated against the return hint, goes back
as JSON (a pydantic model comes back as a dict). Arguments and results are
size-capped; each call is a ``tool_called`` event, served from the record
in a replay (the function is not called again).
"""

from __future__ import annotations

import inspect
import json
import keyword
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from pydantic import ConfigDict, TypeAdapter, ValidationError, create_model

from polyrlm.errors import ConfigError, SubCallError
from polyrlm.schema_text import compact_json, python_declarations, python_type

__all__ = [
    "RESERVED_TOOL_NAMES",
    "TOOL_ARGUMENTS_MAX_BYTES",
    "TOOL_DESCRIPTION_CHARS",
    "TOOL_RESULT_MAX_BYTES",
    "TOOL_SCOPES",
    "Tool",
    "ToolError",
    "as_tools",
    "tool",
]

#: Bytes of one call's arguments, as JSON.
TOOL_ARGUMENTS_MAX_BYTES = 1024**2
#: Bytes of one call's result, as JSON.
TOOL_RESULT_MAX_BYTES = 1024**2
#: Characters of a tool's docstring shown to the model.
TOOL_DESCRIPTION_CHARS = 1_000
#: Where a tool is offered: the root's code only, or every run of the tree.
TOOL_SCOPES = ("root", "tree")
#: Names the environments already give the model (or that their languages take).
RESERVED_TOOL_NAMES = frozenset(
    {
        "answer",
        "context",
        "final",
        "FINAL",
        "llm",
        "llm_query",
        "llm_batch",
        "rlm",
        "rlm_query",
        "rlm_batch",
        "SubCallError",
        "SubCallFailure",
        "print",
    }
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class ToolError(SubCallError):
    """A tool call failed: bad arguments, the function raised, or its result
    is not what it declares. The model's code sees it as a sub-call error."""


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "replace"))


@dataclass(frozen=True)
class Tool:
    """One tool: its name, description and JSON Schemas, and the function
    (None for a tool rebuilt from a record: a replay serves its calls)."""

    name: str
    description: str
    #: JSON Schema of the arguments (an object; ``properties`` in call order).
    parameters: dict[str, Any]
    #: JSON Schema of the result (``{}``: anything JSON).
    returns: dict[str, Any]
    scope: str = "root"
    fn: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def params(self) -> list[str]:
        """Argument names in order (positional arguments bind to them)."""
        return list(self.parameters.get("properties", {}))

    @property
    def required(self) -> list[str]:
        return list(self.parameters.get("required", ()))

    def python_signature(self) -> str:
        """``def name(a: int, b: str = ...) -> float`` from the schemas."""
        args = []
        for name, schema in self.parameters.get("properties", {}).items():
            text = f"{name}: {python_type(schema)}"
            if name not in self.required:
                text += f" = {schema.get('default')!r}" if "default" in schema else " = None"
            args.append(text)
        return f"def {self.name}({', '.join(args)}) -> {python_type(self.returns)}"

    def describe(self) -> str:
        """Signature and docstring, as Python (the Python-language guides),
        after ``TypedDict`` declarations of the named types it uses."""
        doc = f'\n    """{self.description}"""' if self.description else ""
        defs = {**self.parameters.get("$defs", {}), **self.returns.get("$defs", {})}
        declared = python_declarations({"$defs": defs})[0] if defs else ""
        head = f"{declared}\n" if declared else ""
        return head + self.python_signature() + ":" + doc

    def json_text(self) -> str:
        """The tool as one line of JSON: name, description, schemas."""
        return compact_json(
            {
                "name": self.name,
                "description": self.description,
                "arguments": self.parameters,
                "returns": self.returns,
            }
        )

    def spec(self) -> dict[str, Any]:
        """What an environment needs to make the tool's function: its name,
        argument names in order and description (JSON, for kernels and guests)."""
        return {"name": self.name, "params": self.params, "description": self.description}

    def record(self) -> dict[str, Any]:
        """What a trajectory keeps of the tool (no function)."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "returns": self.returns,
            "scope": self.scope,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Tool:
        return cls(
            name=str(record["name"]),
            description=str(record.get("description", "")),
            parameters=dict(record.get("parameters") or {"type": "object", "properties": {}}),
            returns=dict(record.get("returns") or {}),
            scope=str(record.get("scope", "root")),
        )

    def bind(
        self, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Positional and keyword arguments as one dict of named arguments."""
        values = list(args)
        names = self.params
        if len(values) > len(names):
            raise ToolError(f"{self.name} takes {len(names)} arguments, {len(values)} given")
        bound = dict(zip(names, values, strict=False))
        for key, value in (kwargs or {}).items():
            if key in bound:
                raise ToolError(f"{self.name} got argument {key!r} twice")
            bound[key] = value
        return bound

    # -- on the host, with the function --

    def arguments(self, raw: Any) -> dict[str, Any]:
        """The call's arguments, validated (keyword arguments for the function)."""
        if not isinstance(raw, Mapping):
            raise ToolError(f"{self.name}: arguments must be a JSON object of named arguments")
        if _json_size(raw) > TOOL_ARGUMENTS_MAX_BYTES:
            raise ToolError(
                f"{self.name}: arguments over {TOOL_ARGUMENTS_MAX_BYTES} bytes of JSON are refused"
            )
        model = _arguments_model(self)
        try:
            checked = model.model_validate(dict(raw))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors(include_url=False)[:10]
            )
            raise ToolError(f"{self.name}: bad arguments: {problems}") from None
        return {name: getattr(checked, name) for name in model.model_fields if name in raw}

    def result(self, value: Any) -> Any:
        """The function's return value checked against its hint, as JSON data."""
        adapter = _result_adapter(self)
        try:
            data = adapter.dump_python(adapter.validate_python(value), mode="json")
        except (ValidationError, TypeError, ValueError) as exc:
            raise ToolError(f"{self.name} returned a value its hint refuses: {exc}") from None
        if _json_size(data) > TOOL_RESULT_MAX_BYTES:
            raise ToolError(
                f"{self.name}: its result is over {TOOL_RESULT_MAX_BYTES} bytes of JSON"
            )
        return data


# Built once per function (pydantic's model building is slow).
_MODELS: dict[Callable[..., Any], Any] = {}
_ADAPTERS: dict[Callable[..., Any], TypeAdapter[Any]] = {}


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn)
    except Exception:  # unresolvable forward references: treat as unannotated
        return dict(getattr(fn, "__annotations__", {}))


def _arguments_model(t: Tool) -> Any:
    if t.fn is None:
        raise ToolError(f"{t.name}: this tool has no function (a recorded tool)")
    key = t.fn
    if key not in _MODELS:
        hints = _hints(t.fn)
        fields: dict[str, Any] = {}
        for name, param in inspect.signature(t.fn).parameters.items():
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[name] = (hints.get(name, Any), default)
        _MODELS[key] = create_model(
            f"{t.name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
    return _MODELS[key]


def _result_adapter(t: Tool) -> TypeAdapter[Any]:
    if t.fn is None:
        raise ToolError(f"{t.name}: this tool has no function (a recorded tool)")
    if t.fn not in _ADAPTERS:
        _ADAPTERS[t.fn] = TypeAdapter(_hints(t.fn).get("return", Any))
    return _ADAPTERS[t.fn]


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    scope: str = "root",
    description: str | None = None,
) -> Any:
    """Make a :class:`Tool` of ``fn``; use it plainly (``tool(fn, scope="tree")``)
    or as a decorator (``@tool`` / ``@tool(name="lookup")``). ``scope`` is
    ``"root"`` (the root's code only) or ``"tree"`` (child RLMs too)."""
    if fn is None:
        return lambda f: tool(f, name=name, scope=scope, description=description)
    if isinstance(fn, Tool):
        return fn
    if not callable(fn):
        raise ConfigError(f"a tool must be a function, not {fn!r}")
    tool_name = str(name or getattr(fn, "__name__", ""))
    if not _NAME.fullmatch(tool_name) or keyword.iskeyword(tool_name):
        raise ConfigError(f"tool name {tool_name!r} is not an identifier (letters, digits, _)")
    if tool_name in RESERVED_TOOL_NAMES:
        raise ConfigError(f"tool name {tool_name!r} is taken by the environments")
    if scope not in TOOL_SCOPES:
        raise ConfigError(f"tool scope must be one of {', '.join(TOOL_SCOPES)}, not {scope!r}")
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ConfigError(
                f"tool {tool_name}: argument {param.name!r} must be a plain named argument"
            )
    doc = inspect.cleandoc(description or fn.__doc__ or "")[:TOOL_DESCRIPTION_CHARS]
    made = Tool(tool_name, doc, {}, {}, scope, fn)
    try:
        parameters = _arguments_model(made).model_json_schema()
        returns = _result_adapter(made).json_schema()
    except Exception as exc:
        raise ConfigError(f"tool {tool_name}: its type hints cannot be checked: {exc}") from exc
    parameters.pop("title", None)
    parameters.pop("additionalProperties", None)
    for schema in parameters.get("properties", {}).values():
        schema.pop("title", None)  # the name says it; keeps prompts short
    return Tool(tool_name, doc, parameters, returns, scope, fn)


def as_tools(items: Iterable[Any] | None) -> tuple[Tool, ...]:
    """Functions or :class:`Tool` s as tools, their names unique."""
    tools = tuple(tool(item) for item in items or ())
    seen: set[str] = set()
    for t in tools:
        if t.name in seen:
            raise ConfigError(f"two tools are named {t.name!r}")
        seen.add(t.name)
    return tools
