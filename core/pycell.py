"""One cell of the model's Python, run the same way by every Python backend.

Standard library only, and no polyrlm import: the host imports it (the
``python-inline`` backend, the broker's answers, the capped sinks), and its
*source* is also shipped into the Jupyter kernel and the WebAssembly guest,
where it becomes the private module :data:`PYCELL_MODULE` (see
:func:`boot_source`). So all three compile a block alike (a last expression
is shown, as a REPL shows it), cap its output alike, report its errors
without polyrlm's own frames, list the same variables and turn the answer
into the same JSON-able data.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import linecache
import numbers
import reprlib
import threading
import traceback
import types
from collections.abc import Callable, Collection, Mapping, MutableMapping
from pathlib import Path
from typing import Any

__all__ = [
    "ANSWER_MAX_DEPTH",
    "PROVIDED",
    "PYCELL_MODULE",
    "Capped",
    "Sink",
    "answer_slot",
    "boot_source",
    "compile_cell",
    "format_error",
    "list_variables",
    "own_source",
    "plain_answer",
    "provide",
    "read_answer",
    "sub_functions",
    "tool_functions",
    "typed_schema",
]

#: The module name this file's source gets inside a kernel or a sandbox.
PYCELL_MODULE = "_polyrlm_pycell"
#: Levels of lists and dicts an answer keeps; deeper (or self-holding) parts
#: become a short repr, so every answer can be written to a trajectory.
ANSWER_MAX_DEPTH = 100

#: The attribute that marks a function made by :func:`tool_functions`.
_TOOL_MARK = "_polyrlm_tool"

#: One cell compiles at a time per process: CPython 3.11's AST builder keeps
#: its recursion count per interpreter, so two threads building ASTs at once
#: can fail with "AST constructor recursion depth mismatch".
_AST_LOCK = threading.Lock()
#: The names every Python backend gives the model (left out of its variables).
PROVIDED = (
    "answer",
    "FINAL",
    "llm_query",
    "llm_batch",
    "rlm_query",
    "rlm_batch",
    "SubCallError",
    "SubCallFailure",
)


def plain_answer(value: Any, depth: int = 0) -> Any:
    """The answer as JSON-able data: str, numbers, bools, None, lists and
    dicts of those are kept; numpy scalars become their Python value;
    anything else becomes its ``str``; below :data:`ANSWER_MAX_DEPTH` levels
    (a list that holds itself, say) what is left becomes a short ``repr``."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, numbers.Integral):  # numpy and friends
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if depth >= ANSWER_MAX_DEPTH and isinstance(value, list | tuple | dict):
        return reprlib.repr(value)
    if isinstance(value, list | tuple):
        return [plain_answer(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): plain_answer(v, depth + 1) for k, v in value.items()}
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        try:  # a numpy bool or 0-d array: its Python value
            return plain_answer(value.item(), depth + 1)
        except Exception:
            pass
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):  # a pydantic model: its fields
        try:
            return plain_answer(dump(mode="json"), depth + 1)
        except Exception:
            pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_answer(dataclasses.asdict(value), depth + 1)
    return str(value)


class Capped:
    """The cap on one cell's output: keeps up to ``limit`` characters and
    only counts the rest, so printing gigabytes costs time, not memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = 0
        self.dropped = 0

    def take(self, text: str) -> str:
        """The part of ``text`` that still fits; the rest is counted."""
        room = self.limit - self.kept
        piece = text[: max(room, 0)]
        self.kept += len(piece)
        self.dropped += len(text) - len(piece)
        return piece

    def reset(self) -> None:
        self.kept = self.dropped = 0


class Sink(Capped):
    """Collected output of one cell, capped; a file-like ``write`` target,
    safe to write from several threads."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.parts: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        text = str(text)
        with self._lock:
            piece = self.take(text)
            if piece:
                self.parts.append(piece)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def getvalue(self) -> str:
        return "".join(self.parts)


def compile_cell(code: str, name: str) -> tuple[types.CodeType, types.CodeType | None]:
    """The cell's body and, when it ends in an expression, that expression
    (to be shown like a REPL shows it). The source goes into ``linecache``
    under ``name`` so tracebacks quote it; the caller removes it."""
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    with _AST_LOCK:
        tree = ast.parse(code, name)
        last = None
        tail = tree.body[-1] if tree.body else None
        if isinstance(tail, ast.Expr):
            tree.body.pop()
            last = compile(ast.Expression(tail.value), name, "eval")
        return compile(tree, name, "exec"), last


def format_error(exc: BaseException, hide: Callable[[str], bool]) -> str:
    """The model's error as it should read it: a syntax error as itself, any
    other with the traceback of its own cells, leaving out the frame that ran
    the cell and every frame whose file name ``hide`` says is ours."""
    if isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(exc)).rstrip()
    frames = traceback.extract_tb(exc.__traceback__)[1:]
    # Without column spans: CPython 3.11 parses each quoted line with ast to
    # place its ^^^ carets, and its AST builder is not safe against another
    # thread building an AST at the same time ("AST constructor recursion
    # depth mismatch").
    kept = [
        traceback.FrameSummary(f.filename, f.lineno, f.name, line=f.line)
        for f in frames
        if not hide(f.filename)
    ]
    shown = traceback.StackSummary.from_list(kept)
    head = ["Traceback (most recent call last):\n"] if shown else []
    return "".join([*head, *shown.format(), *traceback.format_exception_only(exc)]).rstrip()


def list_variables(
    ns: Mapping[str, Any], hidden: Collection[str], limit: int | None = None
) -> list[tuple[str, str, int | None]]:
    """The model's variables: name, type and length (None when it has none);
    provided names, private names and modules left out; at most ``limit``."""
    out: list[tuple[str, str, int | None]] = []
    for name, value in list(ns.items()):
        if name in hidden or name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if isinstance(value, types.FunctionType) and getattr(value, _TOOL_MARK, False):
            continue
        try:
            size: int | None = len(value)
        except Exception:
            size = None
        out.append((name, type(value).__name__, size))
        if limit is not None and len(out) >= limit:
            break
    return out


def answer_slot(ns: MutableMapping[str, Any]) -> Callable[[Any], Any]:
    """Put a fresh ``answer`` dict in ``ns``; return the ``FINAL`` function
    that fills ``ns['answer']`` (a new dict if the code replaced it)."""
    ns["answer"] = {"content": "", "ready": False}

    def FINAL(value: Any) -> Any:
        answer = ns.get("answer")
        if not isinstance(answer, dict):
            answer = ns["answer"] = {}
        answer["content"] = value
        answer["ready"] = True
        return value

    return FINAL


def provide(
    ns: MutableMapping[str, Any],
    *,
    llm_query: Callable[..., str],
    llm_batch: Callable[..., list[str]],
    rlm_query: Callable[..., str],
    rlm_batch: Callable[..., list[str]],
    SubCallError: type[Exception],
    SubCallFailure: type[str],
    tools: Mapping[str, Callable[..., Any]] | None = None,
) -> None:
    """Give ``ns`` every :data:`PROVIDED` name: a fresh answer, ``FINAL``,
    the backend's sub-call functions and their error types, and the user's
    ``tools`` (made by :func:`tool_functions`)."""
    ns.update(tools or {})
    ns.update(
        llm_query=llm_query,
        llm_batch=llm_batch,
        rlm_query=rlm_query,
        rlm_batch=rlm_batch,
        SubCallError=SubCallError,
        SubCallFailure=SubCallFailure,
        FINAL=answer_slot(ns),
    )


def typed_schema(schema: Any) -> tuple[dict[str, Any] | None, Callable[[Any], Any] | None]:
    """A typed sub-call's ``schema`` as a JSON Schema, and what rebuilds the
    reply: a dict is a JSON Schema (the reply stays JSON data); a pydantic
    model (or any type, where pydantic is importable) gives its schema, and
    the reply comes back as an instance."""
    if schema is None:
        return None, None
    if isinstance(schema, Mapping):
        return dict(schema), None
    to_schema = getattr(schema, "model_json_schema", None)
    if callable(to_schema):
        return to_schema(), schema.model_validate
    try:
        from pydantic import TypeAdapter
    except ImportError:  # the WASM guest: no pydantic
        raise TypeError("schema must be a JSON Schema (a dict) here") from None
    adapter = TypeAdapter(schema)
    return adapter.json_schema(), adapter.validate_python


def sub_functions(
    query: Callable[..., Any], batch: Callable[..., list[Any]], failure: type[str]
) -> tuple[Callable[..., Any], Callable[..., list[Any]]]:
    """``llm_query`` and ``llm_batch`` for the model's code, over the
    backend's ``query(prompt, model, schema)`` and ``batch(prompts, model,
    schema)``: a ``schema`` makes the reply typed (see :func:`typed_schema`)."""

    def llm_query(prompt: str, model: str | None = None, schema: Any = None) -> Any:
        wanted, rebuild = typed_schema(schema)
        reply = query(str(prompt), model, wanted)
        return reply if rebuild is None else rebuild(reply)

    def llm_batch(prompts: list[str], model: str | None = None, schema: Any = None) -> list[Any]:
        wanted, rebuild = typed_schema(schema)
        replies = batch([str(p) for p in prompts], model, wanted)
        if rebuild is None:
            return replies
        return [r if isinstance(r, failure) else rebuild(r) for r in replies]

    return llm_query, llm_batch


def tool_functions(
    specs: Collection[Mapping[str, Any]], call: Callable[[str, dict[str, Any]], Any]
) -> dict[str, Callable[..., Any]]:
    """A function per user tool (``specs``: ``name``, ``params`` in order,
    ``description``) that binds its arguments by name and sends them with
    ``call(name, arguments)``; the tool runs on the host."""

    def make(name: str, params: list[str], doc: str) -> Callable[..., Any]:
        def fn(*args: Any, **kwargs: Any) -> Any:
            if len(args) > len(params):
                raise TypeError(f"{name}() takes {len(params)} arguments, {len(args)} given")
            bound = dict(zip(params, args, strict=False))
            for key, value in kwargs.items():
                if key in bound:
                    raise TypeError(f"{name}() got argument {key!r} twice")
                bound[key] = value
            return call(name, bound)

        fn.__name__ = fn.__qualname__ = name
        fn.__doc__ = doc
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD  # help(fn) shows the real arguments
        fn.__signature__ = inspect.Signature([inspect.Parameter(p, kind) for p in params])  # type: ignore[attr-defined]
        setattr(fn, _TOOL_MARK, True)  # left out of the variables listed
        return fn

    return {
        str(s["name"]): make(str(s["name"]), list(s["params"]), str(s.get("description", "")))
        for s in specs
    }


def read_answer(ns: Mapping[str, Any]) -> tuple[bool, Any]:
    """Whether ``ns['answer']`` is marked ready, and its content as plain data."""
    answer = ns.get("answer")
    if not isinstance(answer, dict):
        return False, None
    return bool(answer.get("ready")), plain_answer(answer.get("content"))


def boot_source(module: str, source: str) -> str:
    """Python source that, run in another interpreter, makes ``source`` the
    module ``module`` there (importable, in ``sys.modules``), leaving no
    other name behind."""
    return (
        "def __polyrlm_module(name, source):\n"
        "    import sys, types\n"
        "    module = types.ModuleType(name)\n"
        "    sys.modules[name] = module\n"
        "    exec(compile(source, '<' + name + '>', 'exec'), module.__dict__)\n"
        f"__polyrlm_module({module!r}, {source!r})\n"
        "del __polyrlm_module\n"
    )


def own_source() -> str:
    """This module's source, to ship it with :func:`boot_source`."""
    return Path(__file__).read_text(encoding="utf-8")
