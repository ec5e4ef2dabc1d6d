"""What plugins hand to the registry: backends and command-line commands.

Plain records, importable without the registry or the hooks (the hook
specifications name them; the registry collects them).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["BackendSpec", "Command", "ExecutorSpec"]


@dataclass(frozen=True)
class BackendSpec:
    """How to find and load one backend, without importing it."""

    name: str
    #: ``"package.module:ClassName"`` of the :class:`Environment` subclass.
    target: str
    #: Top-level modules the backend needs (checked without importing them).
    requires: tuple[str, ...] = ()
    #: The ``polyrlm[...]`` extra that installs ``requires``.
    extra: str | None = None
    description: str = ""
    #: Filled in by the registry: which plugin registered it.
    plugin: str = field(default="", compare=False)

    def missing(self) -> list[str]:
        """Required modules that cannot be found."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    @property
    def available(self) -> bool:
        return not self.missing()


@dataclass(frozen=True)
class ExecutorSpec(BackendSpec):
    """How to find and load one batch executor (``target``: a
    :class:`~polyrlm.batch.Executor` class), without importing it."""


@dataclass(frozen=True)
class Command:
    """A ``polyrlm NAME`` subcommand that a plugin adds.

    ``main`` gets the arguments after ``NAME``, parses them itself (its own
    ``--help``, with ``prog="polyrlm NAME"``) and returns the exit status; a
    :class:`~polyrlm.errors.PolyrlmError` it raises is printed as
    ``polyrlm: error: ...`` with exit status 2. Import what the command
    needs inside ``main``, so that listing the commands stays fast.
    """

    name: str
    #: One line for ``polyrlm --help``.
    help: str
    main: Callable[[Sequence[str]], int] = field(compare=False)
    #: Filled in by the registry: which plugin registered it.
    plugin: str = field(default="", compare=False)
