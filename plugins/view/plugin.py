"""The viewer plugin: ``polyrlm view RUN.jsonl`` (``register_commands``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from polyrlm.hookspecs import hookimpl
from polyrlm.specs import Command

__all__ = ["main", "register_commands"]

HELP = "write a run's trajectory (JSONL) as one HTML page"


def main(argv: Sequence[str]) -> int:
    """``polyrlm view``: write the page and print its path."""
    from polyrlm.plugins.view import write_html

    parser = argparse.ArgumentParser(prog="polyrlm view", description=HELP)
    parser.add_argument("trajectory", help="a JSONL trajectory (--log of polyrlm run)")
    parser.add_argument("-o", "--out", default=None, help="the page (default: TRAJECTORY.html)")
    parser.add_argument("--title", default=None, help="the page's title (default: the question)")
    args = parser.parse_args(list(argv))
    source = Path(args.trajectory)
    out = write_html(
        source,
        args.out or source.with_suffix(".html"),
        title=args.title,
        on_note=lambda note: print(f"polyrlm view: {note}", file=sys.stderr),
    )
    print(out)
    return 0


@hookimpl
def register_commands(register: Callable[[Command], None]) -> None:
    register(Command("view", HELP, main))
