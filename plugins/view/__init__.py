"""The trajectory viewer: a run as one self-contained, searchable HTML page.

``polyrlm view RUN.jsonl -o run.html``, or from Python::

    from polyrlm.plugins.view import write_html

    write_html(result.trajectory, "run.html")
"""

from __future__ import annotations

from polyrlm.plugins.view.nodes import Node, Stats, Summary, Trajectory
from polyrlm.plugins.view.page import (
    VIEW_MARKS,
    VIEW_OPEN_MATCHES,
    VIEW_TEXT_CHARS,
    embed_json,
    render_html,
    write_html,
)
from polyrlm.plugins.view.tree import build_tree

__all__ = [
    "VIEW_MARKS",
    "VIEW_OPEN_MATCHES",
    "VIEW_TEXT_CHARS",
    "Node",
    "Stats",
    "Summary",
    "Trajectory",
    "build_tree",
    "embed_json",
    "render_html",
    "write_html",
]
