"""The MCP server: ``rlm_ask`` and ``backends`` on the official SDK's
:class:`~mcp.server.mcpserver.MCPServer`, served over stdio.

What a client sends chooses the question, the context (a path inside the
roots, or text), a backend among the allowed ones, lower limits and an
answer schema; never a model, an endpoint, a key or any other option: those
are the server's own (:class:`~polyrlm.plugins.mcp.options.ServerOptions`).
An argument the tools do not declare is refused, not ignored. Bad input
and failed runs are tool errors (``isError``); the server keeps serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, cast

import anyio
import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ConfigDict, Field

from polyrlm.errors import ConfigError, PolyrlmError
from polyrlm.plugins.mcp.options import ServerOptions
from polyrlm.plugins.mcp.records import (
    AskBudget,
    AskResult,
    BackendInfo,
    BackendList,
    ask_result,
    clamp,
    summary_text,
)
from polyrlm.plugins.mcp.runs import Runs
from polyrlm.records import Budget, StopReason
from polyrlm.registry import get_registry
from polyrlm.rlm import RLM

__all__ = ["INSTRUCTIONS", "build_server", "serve"]

INSTRUCTIONS = (
    "polyrlm answers questions about contexts too long to read: a file, a directory of "
    "documents or a table (CSV, Parquet, JSON) is loaded into an environment where a "
    "language model writes code to search it and hands pieces to sub-models, instead of "
    "reading it whole. Call rlm_ask with a question and a context_path (inside the roots "
    "this server allows) or text; backends lists the environments."
)

ASK_DESCRIPTION = (
    "Answer a question about a long context with a Recursive Language Model: the context is "
    "never put in a prompt; a model explores it with code (Python, SQL, Bash, ...) and "
    "sub-model calls. Give exactly one of context_path (a file or a directory inside the "
    "server's allowed roots; relative paths start at the first root) or text. Returns the "
    "answer, why the run stopped and what it spent."
)


@dataclass(frozen=True)
class _Prepared:
    rlm: RLM
    context: Path | str
    budget: Budget
    clamped: tuple[str, ...]
    backend: str


def _prepare(
    options: ServerOptions,
    question: str,
    context_path: str | None,
    text: str | None,
    backend: str | None,
    budget: AskBudget | None,
    answer_schema: dict[str, Any] | None,
) -> _Prepared:
    """Everything a call asks for, checked; raises :class:`PolyrlmError`."""
    if not question.strip():
        raise ConfigError("the question is empty")
    if (context_path is None) == (text is None):
        raise ConfigError("give exactly one of context_path or text")
    context: Path | str
    if context_path is not None:
        context = options.roots.confine(context_path)
    else:
        assert text is not None
        if not text:
            raise ConfigError("text is empty: give the context's text, or a context_path")
        context = text
    name = options.default_backend if backend is None else backend
    if name not in options.allowed_backends:
        known = name in get_registry().specs()
        what = "is not allowed by this server" if known else "is not a registered backend"
        allowed = ", ".join(options.allowed_backends)
        raise ConfigError(f"backend {name!r} {what}; allowed: {allowed}")
    limits, clamped = clamp(options.budget, budget)
    rlm = RLM(
        options.model,
        options.sub_model,
        backend=name,
        budget=limits,
        answer_type=answer_schema,
        **options.rlm_options,
    )
    return _Prepared(rlm, context, limits, clamped, name)


def _backend_list(options: ServerOptions) -> BackendList:
    registry = get_registry()
    rows = []
    for name, spec in registry.specs().items():
        missing = spec.missing()
        sandboxed: bool | None = None
        if not missing:
            try:
                sandboxed = bool(registry.get(name).sandboxed)
            except PolyrlmError:
                missing = missing or [spec.target]
        install = None
        if missing:
            install = f'pip install "polyrlm[{spec.extra}]"' if spec.extra else ", ".join(missing)
        rows.append(
            BackendInfo(
                name=name,
                description=spec.description,
                installed=not missing,
                allowed=name in options.allowed_backends,
                default=name == options.default_backend,
                sandboxed=sandboxed,
                install=install,
            )
        )
    return BackendList(backends=rows, default=options.default_backend)


def _strict(tool: Tool) -> Tool:
    """``tool`` refusing arguments it does not declare (the SDK drops them
    silently), in its published input schema too."""
    loose = tool.fn_metadata.arg_model
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    strict = cast(type[ArgModelBase], type(loose.__name__, (loose,), {"model_config": config}))
    tool.fn_metadata.arg_model = strict
    tool.parameters = strict.model_json_schema(by_alias=True)
    return tool


def build_server(options: ServerOptions) -> tuple[MCPServer[Any], Runs]:
    """The server and its runs (drained by :func:`serve` at exit)."""
    runs = Runs(options.max_runs)

    async def rlm_ask(
        question: Annotated[str, Field(description="The question to answer about the context.")],
        context_path: Annotated[
            str | None,
            Field(description="A file or directory inside the allowed roots (or give text)."),
        ] = None,
        text: Annotated[
            str | None, Field(description="The context itself (or context_path).")
        ] = None,
        backend: Annotated[
            str | None,
            Field(
                description="The environment for the model's code (see backends); "
                "default: the server's."
            ),
        ] = None,
        budget: Annotated[
            AskBudget | None,
            Field(description="Lower limits for this run; the server's own are the ceiling."),
        ] = None,
        answer_schema: Annotated[
            dict[str, Any] | None,
            Field(description="A JSON Schema the answer must validate against (JSON answer)."),
        ] = None,
    ) -> Annotated[CallToolResult, AskResult]:
        try:
            prepared = await anyio.to_thread.run_sync(
                partial(
                    _prepare, options, question, context_path, text, backend, budget, answer_schema
                )
            )
            result = await runs.run(partial(prepared.rlm.acompletion, question, prepared.context))
        except PolyrlmError as exc:
            raise ToolError(str(exc)) from None
        outcome = ask_result(result, prepared.backend, prepared.budget, prepared.clamped)
        return CallToolResult(
            content=[TextContent(type="text", text=summary_text(outcome))],
            structured_content=outcome.model_dump(mode="json"),
            is_error=result.stop_reason == StopReason.ERROR,
        )

    def backends() -> BackendList:
        """The registered backends: installed or not, allowed here or not,
        sandboxed or not (an unsandboxed one runs the model's code with this
        server's rights), and the default."""
        return _backend_list(options)

    tools = [
        _strict(Tool.from_function(rlm_ask, description=ASK_DESCRIPTION)),
        _strict(
            Tool.from_function(
                backends, annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True)
            )
        ),
    ]
    server: MCPServer[Any] = MCPServer(
        "polyrlm", instructions=INSTRUCTIONS, tools=tools, log_level="WARNING"
    )
    return server, runs


def serve(options: ServerOptions) -> int:
    """Serve over stdio until the client closes the connection."""
    server, runs = build_server(options)
    try:
        anyio.run(server.run_stdio_async)
    finally:
        runs.drain()
    return 0
