"""The guest side of the ``wasm`` backend: this file's *source* runs inside the
sandbox (CPython 3.15 on WASI), never in the host. The host sends it as the
first turn of every session into a private module ``_polyrlm``; the model's
namespace (``__main__``) only gets the public names: ``context``, ``answer``,
``FINAL``, ``llm_query``, ``llm_batch``, ``rlm_query``, ``rlm_batch``,
``SubCallError``, ``SubCallFailure``, and one function per user tool (made
from the specs in the settings at every install, so a fresh sandbox has them).

It cannot import polyrlm; what it shares with the other Python backends
(compiling a cell, the capped output sink, error text, the variable listing,
the answer's JSON form, the typed ``llm_query`` and the tool functions) comes
from :mod:`polyrlm.pycell`, whose source the host ships in first as the
module ``_polyrlm_pycell``. The sub-call and tool-call functions are in
:mod:`polyrlm.backends.wasm.guest_calls` (shipped next, as ``_polyrlm_calls``),
the table reader in :mod:`polyrlm.backends.wasm.table_files` (as ``_polyrlm_tables``).

How a turn works: the host sends ``_polyrlm.run(code, soft_s, limit)``.
``run`` compiles the code, turns on ``sys.monitoring`` JUMP events for the
cell's own code objects only (loops in the model's code, not in numpy or
pandas), executes it in ``__main__`` with stdout/stderr routed into a capped
sink, and writes one result line (output, error, answer, variables) as JSON
to the real stdout, within the limits the host checks it against (see
:mod:`polyrlm.backends.wasm.report`: the host trusts none of it, since the
model's code can rebind anything here). A loop still running ``soft_s``
seconds later gets ``ExecTimeout`` raised into it, so its variables survive;
code stuck in C is left to the host's hard deadline, which ends the session.

Sub-calls and user tool calls go through the host tool ``polyrlm_call``
(see :mod:`polyrlm.backends.wasm.guest_calls`).
"""

from __future__ import annotations

import builtins
import json
import keyword
import math
import os
import sys
import time
import types
from typing import Any

try:  # in the sandbox: shipped in before this module
    import _polyrlm_calls as calls  # type: ignore[import-not-found]
    import _polyrlm_pycell as pycell  # type: ignore[import-not-found]
    import _polyrlm_tables as tables  # type: ignore[import-not-found]
except ImportError:  # on the host (type checks; the host reads RESULT_MARK)
    from polyrlm import pycell
    from polyrlm.backends.wasm import guest_calls as calls
    from polyrlm.backends.wasm import table_files as tables

ExecTimeout = calls.ExecTimeout
SubCallError = calls.SubCallError
SubCallFailure = calls.SubCallFailure
ToolError = calls.ToolError

__all__ = [
    "RESULT_MARK",
    "ExecTimeout",
    "SubCallError",
    "SubCallFailure",
    "ToolError",
    "install",
    "json_depth",
    "load_context",
    "run",
]

#: Starts the result line the host reads from the turn's stdout.
RESULT_MARK = "\x1epolyrlm-result:"
#: sys.monitoring tool id this module takes (0-2 and 5 are named by CPython).
MONITOR_TOOL_ID = 4

_now = time.monotonic
_settings: dict[str, Any] = {}
_deadline = math.inf
_cells = 0


def _main() -> dict[str, Any]:
    return sys.modules["__main__"].__dict__


def _check_deadline() -> None:
    if time.monotonic() > _deadline:
        raise ExecTimeout(f"the block ran longer than {_settings['soft_s']:g} s")


def _on_jump(code: Any, offset: int, destination: int) -> None:
    # Called at every jump of the model's own code objects (a loop's back edge):
    # the cost of interrupting loops, so it does as little as it can.
    if _now() > _deadline:
        _check_deadline()


def _watch(code: types.CodeType, events: int) -> None:
    """Turn on JUMP events for ``code`` and every code object inside it."""
    monitoring: Any = getattr(sys, "monitoring")  # noqa: B009 - absent from 3.11 stubs
    stack = [code]
    while stack:
        item = stack.pop()
        monitoring.set_local_events(MONITOR_TOOL_ID, item, events)
        stack.extend(c for c in item.co_consts if isinstance(c, types.CodeType))


def _exit(code: Any = None) -> None:
    # exit()/quit() would end the whole session; here they end only the block.
    raise SystemExit(code)


def install(settings: dict[str, Any]) -> None:
    """Set up ``__main__`` (with a function per tool spec in ``settings["tools"]``)
    and the loop watch; the first turn of a session."""
    _settings.update(settings)
    monitoring: Any = getattr(sys, "monitoring")  # noqa: B009 - absent from 3.11 stubs
    monitoring.use_tool_id(MONITOR_TOOL_ID, "polyrlm-deadline")
    monitoring.register_callback(MONITOR_TOOL_ID, monitoring.events.JUMP, _on_jump)
    builtins.exit = builtins.quit = _exit  # type: ignore[assignment]
    main = _main()
    calls.settings.update(settings)
    calls.check_deadline = _check_deadline
    pycell.provide(
        main,
        llm_query=calls.llm_query,
        llm_batch=calls.llm_batch,
        rlm_query=calls.rlm_query,
        rlm_batch=calls.rlm_batch,
        SubCallError=SubCallError,
        SubCallFailure=SubCallFailure,
        tools=calls.tool_functions(settings.get("tools", ())),
    )


def _read(path: str, kind: str) -> Any:
    if kind == "text":
        with open(path, encoding="utf-8", errors="surrogatepass", newline="") as f:
            return f.read()
    if kind == "table":
        return tables.read_table(path)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_context(root: str) -> None:
    """Load the granted, read-only context folder into ``__main__``."""
    with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    main = _main()
    if manifest["kind"] != "dict":
        main["context"] = _read(os.path.join(root, manifest["file"]), manifest["kind"])
    else:
        named = {
            e["name"]: _read(os.path.join(root, e["file"]), e["kind"]) for e in manifest["items"]
        }
        main["context"] = named
        for name, value in named.items():
            if name.isidentifier() and not keyword.iskeyword(name) and name not in main:
                main[name] = value
    _emit({"state": _variables()})


def json_depth(value: Any) -> int:
    """Levels of nested lists and dicts in ``value`` (0 for a scalar), counted
    without recursion, so any depth is measured. Also used by the host."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _variables() -> list[dict[str, Any]]:
    cut = int(_settings["name_chars"])
    named = {k: v for k, v in _main().items() if isinstance(k, str)}  # globals()[1] = ... too
    listed = pycell.list_variables(named, pycell.PROVIDED, int(_settings["max_variables"]))
    return [{"name": n[:cut], "type": t[:cut], "size": s} for n, t, s in listed]


def _fit(content: Any) -> Any:
    """``content``, or its text cut so that it is at most ``answer_chars`` as
    JSON: the limits the host checks (see polyrlm.backends.wasm.report)."""
    limit, depth = int(_settings["answer_chars"]), int(_settings["answer_depth"])
    if json_depth(content) > depth:
        why = f"nested deeper than {depth} levels"
    else:
        size = len(json.dumps(content, ensure_ascii=True))
        if size <= limit:
            return content
        why = f"{size:,} characters as JSON"
    note = f" ... [answer cut: {why}]"
    body = json.dumps(str(content), ensure_ascii=True)[1:-1][: max(0, limit - len(note) - 2)]
    while True:  # drop a half escape at the cut (at most 5 characters)
        try:
            cut: str = json.loads(f'"{body}"')
        except ValueError:
            body = body[:-1]
            continue
        if cut and "\ud800" <= cut[-1] <= "\udbff":  # half of a surrogate pair
            cut = cut[:-1]
        return cut + note


def _answer() -> tuple[dict[str, Any], str | None]:
    """The answer as the host takes it, and why it could not be read, if so."""
    try:
        ready, content = pycell.read_answer(_main())
        return {"ready": ready, "content": _fit(content)}, None
    except Exception as exc:  # e.g. a list that contains itself: the model's to fix
        why = f"the answer could not be read, so it was not taken: {type(exc).__name__}: {exc}"
        return {"ready": False, "content": None}, why


def _middle(text: str, limit: int) -> str:
    """``text`` cut in the middle to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    gap = "\n...\n"
    head = max(0, limit - len(gap)) // 2
    return text[:head] + gap + text[len(text) - max(0, limit - len(gap) - head) :]


def _emit(result: dict[str, Any]) -> None:
    stream = sys.__stdout__
    assert stream is not None
    stream.write("\n" + RESULT_MARK + json.dumps(result, ensure_ascii=True) + "\n")
    stream.flush()


def _ours(filename: str) -> bool:
    """Frames of this helper, its calls and pycell: not the model's code."""
    return filename in ("<_polyrlm>", "<_polyrlm_calls>", "<_polyrlm_pycell>")


def run(code: str, soft_s: float | None, limit: int) -> None:
    """Run one block of the model's code in ``__main__``; report one result line.
    ``soft_s``: seconds before its loops are interrupted; None: not watched."""
    global _deadline, _cells
    _cells += 1
    _settings["soft_s"] = soft_s
    monitoring: Any = getattr(sys, "monitoring")  # noqa: B009 - absent from 3.11 stubs
    main = _main()
    sink = pycell.Sink(limit)
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = sink
    error: str | None = None
    timed_out = False
    try:
        try:
            body, last = pycell.compile_cell(code, f"<cell-{_cells}>")
            if soft_s is not None:
                for item in (body, last):
                    if item is not None:
                        _watch(item, monitoring.events.JUMP)
                _deadline = time.monotonic() + soft_s
            exec(body, main)
            if last is not None:
                value = eval(last, main)
                if value is not None:
                    print(repr(value))
        finally:
            _deadline = math.inf
    except ExecTimeout as exc:
        timed_out = True
        error = f"TimeoutError: {exc}; it was interrupted, variables set before that are kept"
    except BaseException as exc:  # the model's error, reported to it
        error = pycell.format_error(exc, _ours)
        if isinstance(exc, MemoryError):
            error += "\n" + str(_settings["memory_note"])
    finally:
        sys.stdout, sys.stderr = saved
    answer, unread = _answer()
    if unread is not None:
        error = unread if error is None else f"{error}\n{unread}"
    _emit(
        {
            "output": sink.getvalue(),
            "dropped": sink.dropped,
            "error": None if error is None else _middle(error, limit),
            "timed_out": timed_out,
            "answer": answer,
            "state": _variables(),
        }
    )
