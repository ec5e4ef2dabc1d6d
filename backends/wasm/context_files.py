"""The context as files in a private host folder that the sandbox is granted
read-only (at :data:`CONTEXT_GUEST_PATH`), with a ``manifest.json`` the guest's
loader reads (:func:`polyrlm.backends.wasm.guest.load_context`).

Kinds, per the design's Python conventions: ``text`` (a ``str``, read back
exactly: UTF-8, no newline translation), ``json`` (a list of documents, or any
other JSON value) and ``table`` (a pandas DataFrame, as pandas' table JSON,
which keeps column types). A dict is named contexts, one file each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from polyrlm.contexts import clear_folder
from polyrlm.errors import ConfigError

__all__ = ["CONTEXT_GUEST_PATH", "MANIFEST_NAME", "write_context"]

#: Where the guest sees the granted context folder.
CONTEXT_GUEST_PATH = "/context"
#: The file in that folder that says what the others hold.
MANIFEST_NAME = "manifest.json"


def _is_table(value: Any) -> bool:
    return hasattr(value, "to_json") and hasattr(value, "columns") and hasattr(value, "dtypes")


def _write_one(value: Any, folder: Path, stem: str) -> dict[str, str]:
    """One context value as a file; its manifest entry."""
    if isinstance(value, str):
        name = f"{stem}.txt"
        # surrogatepass: a str read from bytes with surrogateescape still crosses, exactly.
        (folder / name).write_bytes(value.encode("utf-8", "surrogatepass"))
        return {"kind": "text", "file": name}
    if _is_table(value):
        name = f"{stem}.table.json"
        try:
            value.to_json(folder / name, orient="table")
        except ValueError:  # pandas' table JSON needs a unique index
            value.reset_index(drop=True).to_json(folder / name, orient="table")
        return {"kind": "table", "file": name}
    name = f"{stem}.json"
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"the wasm backend cannot send a {type(value).__name__} context into the sandbox "
            f"({exc}); pass a str, a list of str or JSON values, a dict of those, a pandas "
            "DataFrame, or a Path"
        ) from None
    (folder / name).write_text(text, encoding="ascii")
    return {"kind": "json", "file": name}


def write_context(value: Any, folder: Path) -> None:
    """Write ``value`` (already a Python value: see ``load_python_context``)
    into ``folder``, replacing what was there. The folder itself is kept: a
    running sandbox holds it open as its grant."""
    clear_folder(folder)
    manifest: dict[str, Any]
    if isinstance(value, Mapping):
        items = []
        for number, (name, item) in enumerate(value.items()):
            entry = _write_one(item, folder, f"item{number}")
            items.append({"name": str(name), **entry})
        manifest = {"kind": "dict", "items": items}
    else:
        manifest = _write_one(value, folder, "context")
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, ensure_ascii=True), encoding="ascii")
