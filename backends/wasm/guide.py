"""The prompt guide of the ``wasm`` backend: the Python guide, plus what the
sandbox has and has not (a typed sub-call's schema is a dict here: no pydantic).
The answer type and the user tools are shown as Python by
:class:`~polyrlm.environment.PythonGuides`."""

from __future__ import annotations

import textwrap

from polyrlm.backends.python.guide import python_guide

__all__ = ["WASM_IMPORTS", "wasm_guide"]

#: Characters per line of the limits paragraph, as the shared guide's lines.
_WIDTH = 86
#: What the sandbox can import and do, as the root model is told.
WASM_IMPORTS = """\
This Python runs in a WebAssembly sandbox (CPython 3.15 on WASI). Importable: the
standard library, numpy, pandas, scipy, scikit-learn, statsmodels, sympy, networkx,
regex, bs4, lxml, yaml. Not available: the network (sockets fail), subprocesses and
os.system, threads, ctypes, pip, and anything that writes files (matplotlib included):
the filesystem is read-only (the context's own files are at /context); keep your data
in variables. pydantic is not importable either: the `schema=` of a typed llm_query
or llm_batch must be a JSON Schema as a dict, and the reply is JSON data (dicts, lists,
numbers, strings) checked against it on the host.
{limits}
"""


def wasm_guide(
    *,
    context_hint: str,
    timeout_s: float,
    memory_bytes: int,
    loops_interrupted: bool,
) -> str:
    """The guide for one environment, with its limits written in."""
    stop = (
        "A block running longer is interrupted with TimeoutError (your variables are kept); "
        "one stuck inside a single long C call is stopped with the sandbox, and then every "
        "variable is lost."
        if loops_interrupted
        else "A block running longer is stopped with the sandbox: every variable is lost."
    )
    limits = textwrap.fill(
        f"Each block may run {timeout_s:g} s, sub-calls included, and the sandbox holds at "
        f"most {memory_bytes / 1024**3:g} GiB (MemoryError past it). {stop}",
        width=_WIDTH,
    )
    return python_guide(
        flavour="CPython in a WebAssembly sandbox",
        context_hint=context_hint,
        imports=WASM_IMPORTS.format(limits=limits),
    )
