"""One self-contained HTML page for a trajectory: no network, no external file.

The events are built into a tree (:mod:`polyrlm.plugins.view.tree`) and embedded as
JSON in a ``<script type="application/json">`` block, with every character
that could end that block or confuse a parser escaped; the page's script
builds the DOM with ``textContent`` only. A Content-Security-Policy that
allows nothing but the page's own style and script (by hash) guards the rest.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from polyrlm.errors import ConfigError
from polyrlm.events import Event
from polyrlm.plugins.view.assets import PAGE, SCRIPT, STYLE
from polyrlm.plugins.view.nodes import Trajectory
from polyrlm.plugins.view.tree import build_tree
from polyrlm.trajectory import load_trajectory_file, record_notes

__all__ = [
    "TITLE_CHARS",
    "VIEW_MARKS",
    "VIEW_OPEN_MATCHES",
    "VIEW_TEXT_CHARS",
    "embed_json",
    "render_html",
    "write_html",
]

#: Characters of a prompt, reply, code or output shown before its
#: "show all N chars" toggle (the whole text is in the page).
VIEW_TEXT_CHARS = 2_000
#: Search matches highlighted per text block, so a one-letter query on a
#: megabyte of output cannot freeze the page.
VIEW_MARKS = 500
#: Matching nodes a search opens (their texts drawn, matches marked); past
#: that, the rest show their highlighted header and open on a click.
VIEW_OPEN_MATCHES = 50
#: Characters of the question used as the page title when none is given.
TITLE_CHARS = 80

# Characters that could close the <script> block (<, >), start an entity (&),
# end a line in older JavaScript (U+2028/2029) or not encode as UTF-8 (lone
# surrogates); all are written as \\uXXXX escapes, which JSON reads back as is.
_UNSAFE = re.compile("[<>&\u2028\u2029\ud800-\udfff]")


def embed_json(value: Any) -> str:
    """``value`` as JSON that is safe inside ``<script type="application/json">``."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _title(tree: Trajectory, title: str | None) -> str:
    if title is not None:
        return title
    question = " ".join(tree.question.split())
    if len(question) > TITLE_CHARS:
        question = question[: TITLE_CHARS - 1] + "…"
    return f"polyrlm run: {question}" if question else "polyrlm run"


def render_html(
    events: Sequence[Event], *, title: str | None = None, notes: Sequence[str] | None = None
) -> str:
    """The viewer page for ``events`` (a whole or partial trajectory).
    ``notes`` head the page (default: where a record that ends early ends,
    :func:`~polyrlm.trajectory.record_notes`)."""
    tree = build_tree(e.model_dump(mode="json") for e in events)
    heading = _title(tree, title)
    data = {
        "title": heading,
        "notes": list(record_notes(events) if notes is None else notes),
        "limits": {
            "text_chars": VIEW_TEXT_CHARS,
            "marks": VIEW_MARKS,
            "open_matches": VIEW_OPEN_MATCHES,
        },
        "summaries": [s.to_json() for s in tree.summaries],
        "runs": [r.to_json() for r in tree.runs],
    }
    csp = (
        f"default-src 'none'; style-src {_sha256(STYLE)}; script-src {_sha256(SCRIPT)}; "
        "base-uri 'none'; form-action 'none'"
    )
    return PAGE.format(
        csp=csp, title=html.escape(heading), style=STYLE, script=SCRIPT, data=embed_json(data)
    )


def write_html(
    source: str | Path | Sequence[Event],
    out: str | Path,
    *,
    title: str | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Path:
    """Writes the viewer page of ``source`` (a JSONL trajectory's path, or the
    events themselves, e.g. ``result.trajectory``) to ``out``; returns ``out``.

    Raises :class:`~polyrlm.errors.ConfigError` for an unreadable file or one
    that is not a trajectory. A record that ends early (a killed run) is
    shown as far as it goes: the page says where it ends and which
    half-written last line it ignored, and ``on_note`` is told the same.
    """
    target = Path(out)
    if isinstance(source, str | Path):
        if Path(source).resolve() == target.resolve():
            raise ConfigError(f"the page would overwrite its trajectory {str(source)!r}")
        record = load_trajectory_file(source)
        events, notes = record.events, record.notes()
    else:
        events, notes = list(source), record_notes(source)
    page = render_html(events, title=title, notes=notes)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc
    if on_note is not None:
        for note in notes:
            on_note(note)
    return target
