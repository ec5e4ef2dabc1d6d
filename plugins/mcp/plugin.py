"""The MCP plugin: ``polyrlm mcp`` (``register_commands``), polyrlm as a
Model Context Protocol server over stdio."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from polyrlm.hookspecs import hookimpl
from polyrlm.plugins.mcp import HELP
from polyrlm.specs import Command

__all__ = ["main", "register_commands"]


def main(argv: Sequence[str]) -> int:
    """``polyrlm mcp``: check the options, then serve until stdin closes."""
    from polyrlm.plugins.mcp.options import parse_options

    options = parse_options(argv)
    from polyrlm.plugins.mcp.server import serve

    return serve(options)


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command("mcp", HELP, main))
