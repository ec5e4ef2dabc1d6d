"""The demo plugin: the ``polyrlm demo`` command (``register_commands``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from polyrlm.hookspecs import hookimpl
from polyrlm.specs import Command

__all__ = ["register_commands"]


def _demo(argv: Sequence[str]) -> int:
    from polyrlm.plugins.demo.demo import main

    return main(argv)


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(
        Command(
            "demo", "the main job offline: a local sub-model, a scripted root, every backend", _demo
        )
    )
