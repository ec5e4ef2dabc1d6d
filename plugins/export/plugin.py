"""The export plugin: ``polyrlm export sft|rl`` (``register_commands``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from polyrlm.hookspecs import hookimpl
from polyrlm.plugins.export.cli import HELP
from polyrlm.specs import Command

__all__ = ["register_commands"]


def _export(argv: Sequence[str]) -> int:
    from polyrlm.plugins.export.cli import main

    return main(argv)


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command("export", HELP, _export))
