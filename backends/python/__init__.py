"""Python backends: ``python-inline`` (in-process) and, with the ``python``
extra, ``python`` (a Jupyter kernel).

This module only registers them; the environments load on first use.
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
            name="python-inline",
            target="polyrlm.backends.python.inline:InlinePythonEnvironment",
            description="Python in the host process: fastest, not isolated.",
        )
    )
    register(
        BackendSpec(
            name="python",
            target="polyrlm.backends.python.kernel:KernelPythonEnvironment",
            requires=("jupyter_client", "ipykernel"),
            extra="python",
            description="Python in a Jupyter kernel of its own (a separate process).",
        )
    )
