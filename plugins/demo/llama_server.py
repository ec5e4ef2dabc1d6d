"""llama-cpp-python's OpenAI-compatible server (``python -m
llama_cpp.server``, the same arguments), with llama.cpp's extra CPU buffer
types off.

Why: on CPUs with AMX (Intel Xeon, Sapphire Rapids and later), a llama.cpp
built for the machine it is compiled on (pip's default) computes matrix
products in AMX buffers, and in llama-cpp-python 0.3.35 and 0.3.36 that
path crashes the server (SIGSEGV in ``ggml_backend_amx_mul_mat``) on the
first prompt of more than a token or two. Without the extra buffer types
llama.cpp uses its plain AVX kernels; a 135M model loses nothing that
matters. Run as ``python -m polyrlm.plugins.demo.llama_server ARGS``.
"""

from __future__ import annotations

import runpy
from typing import Any

__all__ = ["without_extra_buffer_types"]


def without_extra_buffer_types() -> None:
    """Make every model llama-cpp-python loads in this process skip the
    extra buffer types (a no-op on a llama.cpp too old to have them)."""
    from llama_cpp import llama_cpp as native

    default = native.llama_model_default_params
    if "use_extra_bufts" not in {field[0] for field in native.llama_model_params._fields_}:
        return

    def params() -> Any:
        chosen = default()
        chosen.use_extra_bufts = False
        return chosen

    native.llama_model_default_params = params


if __name__ == "__main__":
    without_extra_buffer_types()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
