"""Bash backend: one persistent bash shell per environment, over the context
as files, sandboxed by bubblewrap when it is installed.

This module only registers it; the environment loads on first use.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from polyrlm.hookspecs import hookimpl
from polyrlm.registry import BackendSpec

__all__ = ["register_backends"]


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    if shutil.which("bwrap"):
        isolation = "sandboxed by bubblewrap: no network, read-only system and context"
    else:
        isolation = "NOT sandboxed: bubblewrap (bwrap) is not installed"
    register(
        BackendSpec(
            name="bash",
            target="polyrlm.backends.bash.environment:BashEnvironment",
            requires=(),
            extra=None,
            description=f"A persistent bash shell over the context as files; {isolation}.",
        )
    )
