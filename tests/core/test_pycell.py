"""polyrlm.pycell: the one cell runtime that python-inline, the kernel and the
WebAssembly guest share (the latter two get its source shipped in)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from polyrlm.backends.python.inline import InlinePythonEnvironment
from polyrlm.backends.python.kernel import KernelPythonEnvironment
from polyrlm.backends.wasm.environment import WasmEnvironment
from polyrlm.environment import Environment
from polyrlm.pycell import (
    PYCELL_MODULE,
    Sink,
    answer_slot,
    boot_source,
    own_source,
    plain_answer,
    read_answer,
)
from polyrlm.testing.contract import EchoSubCalls


def test_plain_answer_turns_numpy_values_into_python_ones() -> None:
    np = pytest.importorskip("numpy")
    assert plain_answer(np.bool_(True)) is True
    assert plain_answer(np.int64(7)) == 7 and type(plain_answer(np.int64(7))) is int
    assert plain_answer(np.float32(0.5)) == 0.5
    assert plain_answer(np.array(3)) == 3  # a 0-d array
    assert plain_answer({"a": (np.int8(1), None)}) == {"a": [1, None]}
    assert plain_answer(np.array([1, 2])) == "[1 2]"  # anything else: its str


def test_sink_keeps_up_to_its_limit_and_counts_the_rest() -> None:
    sink = Sink(5)
    assert sink.write("abc") == 3 and sink.write("defgh") == 5
    assert (sink.getvalue(), sink.kept, sink.dropped) == ("abcde", 5, 3)
    sink.reset()
    assert (sink.kept, sink.dropped) == (0, 0)


def test_final_fills_the_answer_even_after_the_code_replaced_it() -> None:
    ns: dict[str, object] = {}
    final = answer_slot(ns)
    assert read_answer(ns) == (False, "")
    ns["answer"] = 5
    assert read_answer(ns) == (False, None)
    final(("x", 1))
    assert read_answer(ns) == (True, ["x", 1])


def test_boot_source_makes_the_module_in_another_interpreter() -> None:
    probe = (
        f"import json, sys\nm = sys.modules[{PYCELL_MODULE!r}]\n"
        "print(json.dumps([m.plain_answer((1, 'a')), [n for n in dir() if 'polyrlm' in n]]))"
    )
    code = boot_source(PYCELL_MODULE, own_source()) + probe
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [[1, "a"], []]  # the module, and no name left behind


@pytest.mark.parametrize(
    "backend", [InlinePythonEnvironment, KernelPythonEnvironment, WasmEnvironment]
)
def test_every_python_backend_runs_cells_alike(backend: type[Environment]) -> None:
    with backend(EchoSubCalls()) as env:
        env.load_context("ctx")
        env.execute("def f():\n    return 1 / 0")
        error = env.execute("f()").error
        assert error is not None and "return 1 / 0" in error
        assert error.rstrip().endswith("ZeroDivisionError: division by zero")
        if backend is not KernelPythonEnvironment:  # the kernel's are IPython's tracebacks
            assert error.startswith("Traceback (most recent call last):\n")
            assert 'File "<cell-1>", line 2, in f' in error and "polyrlm" not in error
        result = env.execute("answer = 'replaced'\nFINAL({'n': 2})")
        assert (result.answer_ready, result.answer) == (True, {"n": 2})
        names = {v.name for v in env.read_state().variables}
        assert "f" in names and not names & {"answer", "FINAL", "llm_query"}
