"""The context as files in a private host folder that the sandbox is granted
read-only (at :data:`CONTEXT_GUEST_PATH`), with a ``manifest.json`` the guest's
loader reads (:func:`polyrlm.backends.wasm.guest.load_context`).

Kinds, per the design's Python conventions: ``text`` (a ``str``, read back
exactly: UTF-8, no newline translation), ``json`` (a list of documents, or any
other JSON value) and ``table`` (a pandas DataFrame, as a folder of column
files that keep its dtypes, values and index: the format is described in
:mod:`polyrlm.backends.wasm.table_files`). A dict is named contexts, one
file (or table folder) each.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from polyrlm.backends.wasm.table_files import write_table
from polyrlm.contexts import clear_folder
from polyrlm.errors import ConfigError

__all__ = ["CONTEXT_GUEST_PATH", "MANIFEST_NAME", "write_context"]

#: Where the guest sees the granted context folder.
CONTEXT_GUEST_PATH = "/context"
#: The file in that folder that says what the others hold.
MANIFEST_NAME = "manifest.json"


def _is_table(value: Any) -> bool:
    return hasattr(value, "iloc") and hasattr(value, "columns") and hasattr(value, "dtypes")


def _write_one(value: Any, folder: Path, stem: str) -> dict[str, str]:
    """One context value as a file; its manifest entry."""
    if isinstance(value, str):
        name = f"{stem}.txt"
        # surrogatepass: a str read from bytes with surrogateescape still crosses, exactly.
        (folder / name).write_bytes(value.encode("utf-8", "surrogatepass"))
        return {"kind": "text", "file": name}
    if _is_table(value):
        name = f"{stem}.table"
        try:
            write_table(value, folder / name)
        except TypeError as exc:  # a value the guest cannot make
            raise ConfigError(
                f"the wasm backend cannot send this table into the sandbox: {exc}"
            ) from None
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
    running sandbox holds it open as its grant. The files are made in a
    folder beside it first, so a value that cannot be sent (a
    :class:`ConfigError`) leaves the old context whole."""
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        manifest: dict[str, Any]
        if isinstance(value, Mapping):
            items = []
            for number, (name, item) in enumerate(value.items()):
                entry = _write_one(item, staging, f"item{number}")
                items.append({"name": str(name), **entry})
            manifest = {"kind": "dict", "items": items}
        else:
            manifest = _write_one(value, staging, "context")
        text = json.dumps(manifest, ensure_ascii=True)
        (staging / MANIFEST_NAME).write_text(text, encoding="ascii")
        clear_folder(folder)
        for made in staging.iterdir():
            made.rename(folder / made.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
