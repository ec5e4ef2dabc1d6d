"""``python-inline``: the model's code runs in this very process.

Fast (no process boundary: an exec costs microseconds) and **not isolated**:
the code can read the host's memory, files and credentials. Use it for
trusted models and for research; use ``python`` (a Jupyter kernel) or
``wasm`` otherwise. The per-exec timeout is best effort: it interrupts
Python code, not a long call inside C (the core then abandons the thread
and starts a fresh namespace).
"""

from __future__ import annotations

import ctypes
import linecache
import threading
import time
from itertools import count
from pathlib import Path
from typing import Any, ClassVar

import polyrlm
import polyrlm.backends
from polyrlm.backends.python.capture import capture
from polyrlm.backends.python.guide import python_compact_guide, python_guide
from polyrlm.backends.python.watchdog import watchdog
from polyrlm.contexts import load_python_context
from polyrlm.environment import ContractSnippets, Environment, PythonGuides, SubCallFailure
from polyrlm.errors import SubCallError
from polyrlm.pycell import (
    PROVIDED,
    compile_cell,
    format_error,
    list_variables,
    provide,
    read_answer,
    sub_functions,
    tool_functions,
)
from polyrlm.records import ExecResult, State, VarInfo

__all__ = ["PYTHON_CONTRACT", "InlinePythonEnvironment", "context_hint"]

PYTHON_CONTRACT = ContractSnippets(
    print_hello="print('hello')",
    set_var="x = 41",
    read_var="print(x + 1)",
    context_length="print(len(context))",
    set_answer="answer['content'] = '42'\nanswer['ready'] = True",
    fail="raise ValueError('boom')",
    llm_query="print(llm_query('ping'))",
    llm_batch="print(','.join(llm_batch(['a', 'b', 'c'])))",
    loop_forever="while True:\n    pass",
    flood="for _ in range(10_000):\n    print('x' * 1_000)",
    typed_answer="FINAL({'name': 'Ada', 'tags': ['x', 'y'], 'address': {'city': 'Paris'}})",
    wrong_typed_answer="FINAL({'name': 'Ada', 'tags': 'x'})",
    call_tool="FINAL(area(6, height=7))",
    typed_llm_query="print(llm_query('ping', schema={'type': 'object'})['echo'])",
)

#: Source folders of polyrlm (core, backends) whose frames tracebacks leave out.
_HIDDEN_PREFIXES = tuple(
    str(Path(m.__file__ or "").parent) + "/" for m in (polyrlm, polyrlm.backends)
)


class ExecTimeout(BaseException):
    """Raised inside the running cell when its time is up. A BaseException so
    that the model's own ``except Exception`` does not swallow it."""


def _interrupt(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(ExecTimeout)
    )


def _clear_interrupt(thread_id: int) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)


def context_hint(context: Any) -> str:
    """How the guide describes a loaded Python context."""
    if isinstance(context, str):
        return f"a str of {len(context):,} characters"
    if isinstance(context, dict):
        return "a dict of named contexts, each also a variable of its own name"
    if isinstance(context, list):
        return f"a list of {len(context):,} documents"
    if hasattr(context, "columns"):
        return f"a pandas DataFrame of {len(context):,} rows"
    return f"a {type(context).__name__}"


def _hidden_frame(filename: str) -> bool:
    """polyrlm's own frames (the sub-call plumbing) and the thread hand-off:
    noise to the model, and they vary between runs."""
    return filename.startswith(_HIDDEN_PREFIXES) or any(
        part in filename for part in ("/concurrent/futures/", "/asyncio/")
    )


class InlinePythonEnvironment(PythonGuides, Environment):
    """A persistent namespace in the host process."""

    name: ClassVar[str] = "python-inline"
    language: ClassVar[str] = "python"
    fence_tags: ClassVar[tuple[str, ...]] = ("python", "py", "repl")
    sandboxed: ClassVar[bool] = False
    contract: ClassVar[ContractSnippets] = PYTHON_CONTRACT

    #: Environments made in this process: keeps their cells apart in linecache.
    _serials = count(1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ns: dict[str, Any] = {}
        self._context: Any = ""
        self._serial = next(self._serials)
        self._cells: list[str] = []
        self._reset()

    def _reset(self) -> None:
        sc = self.subcalls
        llm_query, llm_batch = sub_functions(sc.llm_query, sc.llm_batch, SubCallFailure)

        def rlm_query(prompt: str, context: Any = None) -> str:
            return sc.rlm_query(prompt, context)

        def rlm_batch(prompts: list[str], contexts: list[Any] | None = None) -> list[str]:
            return sc.rlm_batch(list(prompts), contexts)

        specs = [t.spec() for t in sc.tools]
        self.ns.clear()
        self.ns["__name__"] = "__main__"
        provide(
            self.ns,
            llm_query=llm_query,
            llm_batch=llm_batch,
            rlm_query=rlm_query,
            rlm_batch=rlm_batch,
            SubCallError=SubCallError,
            SubCallFailure=SubCallFailure,
            tools=tool_functions(specs, sc.call_tool),
        )

    def close(self) -> None:
        for name in self._cells:  # the cells' source is no longer needed
            linecache.cache.pop(name, None)
        self._cells.clear()

    def load_context(self, context: Any) -> None:
        value = load_python_context(context)
        self._context = value
        self.ns["context"] = value
        if isinstance(value, dict):
            for key, item in value.items():
                if key.isidentifier() and key not in self.ns:
                    self.ns[key] = item

    def _compile(self, code: str) -> tuple[Any, Any]:
        # Unique in linecache (tracebacks read the source there); the model
        # sees <cell-N>, numbered per environment, so a replay shows the same.
        name = f"<cell-{len(self._cells) + 1}@{self._serial}>"
        self._cells.append(name)
        return compile_cell(code, name)

    def execute(self, code: str) -> ExecResult:
        started = time.perf_counter()
        error: str | None = None
        timed_out = False
        tid = threading.get_ident()
        limit = self.exec_limit_s()
        with capture(self.config.capture_limit_chars) as sink:
            try:
                token = watchdog.arm(limit, lambda: _interrupt(tid))
                try:
                    body, last = self._compile(code)
                    exec(body, self.ns)
                    if last is not None:
                        value = eval(last, self.ns)
                        if value is not None:
                            print(repr(value))
                finally:
                    watchdog.disarm(token)  # after this it cannot fire ...
                    _clear_interrupt(tid)  # ... and one that already fired is dropped
            except ExecTimeout:
                timed_out = True
                error = (
                    f"TimeoutError: the block ran longer than {limit:g} s "
                    "and was interrupted; variables set before that are kept"
                )
            except BaseException as exc:  # the model's error, reported to it
                error = format_error(exc, _hidden_frame).replace(f"@{self._serial}>", ">")
        ready, content = read_answer(self.ns)
        return ExecResult(
            output=sink.getvalue(),
            error=error,
            truncated_chars=sink.dropped,
            duration_s=time.perf_counter() - started,
            answer_ready=ready,
            answer=content if ready else None,
            timed_out=timed_out,
        )

    def read_state(self) -> State:
        ready, content = read_answer(self.ns)
        return State(
            variables=tuple(
                VarInfo(name=n, type=t, size=size)
                for n, t, size in list_variables(self.ns, PROVIDED)
            ),
            answer=content,
            answer_ready=ready,
        )

    def compact_guide(self) -> str:
        return python_compact_guide(flavour="in-process", context_hint=context_hint(self._context))

    def prompt_guide(self) -> str:
        return python_guide(
            flavour="in-process, not sandboxed",
            context_hint=context_hint(self._context),
            imports="The Python standard library is importable, and whatever the host has.\n",
        )
