"""The context as files in the environment's context folder.

Conventions (the design's Bash column):

* text (``str``; ``None`` is empty text): ``context.txt``, exactly the
  text's UTF-8 bytes (no newline added); ``$CONTEXT`` is that file;
* a list of documents: one file per document, ``000000.txt``,
  ``000001.txt``, ... (zero-padded, so ``ls`` order is document order; a
  non-text item is ``.json``); ``$CONTEXT`` is the folder itself;
* a table (pandas DataFrame, Arrow table): ``context.csv`` with a header
  line and no index column;
* named contexts (``dict``): one file (or folder) each, named after the key
  with characters other than ``A-Za-z0-9._-`` replaced by ``_``;
  ``$CONTEXT`` is the folder;
* a ``Path`` to a file: the file itself, under its own name, not copied (a
  read-only bind in the sandbox, a symlink without it); Parquet is
  converted to CSV. A ``Path`` to a directory: that directory is the
  context folder;
* any other JSON value: ``context.json``.

``$CONTEXT_DIR`` is always the context folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyrlm.contexts import clear_folder
from polyrlm.errors import ConfigError

__all__ = ["DOC_NAME_DIGITS", "ContextPlan", "place_context"]

#: Digits at least in a document's file name (``000000.txt``).
DOC_NAME_DIGITS = 6
#: Names of the first named contexts listed in the guide's hint.
_LISTED_NAMES = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class ContextPlan:
    """What :func:`place_context` made: where ``$CONTEXT`` points, the
    read-only binds it needs, and a one-line description for the guide."""

    #: ``$CONTEXT`` relative to the context folder; "" is the folder itself.
    context: str = "context.txt"
    hint: str = "an empty text file"
    #: A directory given as the context: it *is* the context folder.
    root: Path | None = None
    #: ``(host path, path relative to the context folder)``, bound read-only
    #: (sandboxed) or symlinked (unsandboxed) over a placeholder.
    binds: list[tuple[Path, str]] = field(default_factory=list)


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes read with surrogateescape, or worse
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return text.encode("utf-8", "surrogatepass")


def _is_table(value: Any) -> bool:
    return hasattr(value, "columns") and (hasattr(value, "to_csv") or hasattr(value, "to_pandas"))


def _write_table(value: Any, path: Path) -> int:
    frame = value if hasattr(value, "to_csv") else value.to_pandas()
    frame.to_csv(path, index=False)
    return len(frame)


def _read_parquet(path: Path) -> Any:
    try:
        import pandas as pd

        return pd.read_parquet(path)
    except ImportError as exc:
        raise ConfigError(
            f"the bash backend converts {path.name} to CSV, which needs pandas and pyarrow: "
            'pip install "polyrlm[sql]"'
        ) from exc


class _Placer:
    def __init__(self, folder: Path, link: bool) -> None:
        self.folder = folder
        self.link = link
        self.plan = ContextPlan()

    def _attach(self, source: Path, relative: str) -> None:
        """A host file or folder at ``relative``: a symlink, or a placeholder
        for a read-only bind in the sandbox."""
        target = self.folder / relative
        if self.link:
            target.symlink_to(source)
            return
        if source.is_dir():
            target.mkdir()
        else:
            target.touch()
        self.plan.binds.append((source, relative))

    def one(self, value: Any, stem: str) -> str:
        """Place ``value`` as ``stem`` plus a suffix; return the name used."""
        if value is None:
            value = ""
        if isinstance(value, str):
            name = f"{stem}.txt"
            (self.folder / name).write_bytes(_encode(value))
        elif isinstance(value, bytes | bytearray):
            name = f"{stem}.bin"
            (self.folder / name).write_bytes(bytes(value))
        elif isinstance(value, Path):
            name = self.path(value, stem)
        elif _is_table(value):
            name = f"{stem}.csv"
            _write_table(value, self.folder / name)
        elif isinstance(value, list | tuple):
            name = stem
            (self.folder / name).mkdir()
            width = max(DOC_NAME_DIGITS, len(str(len(value) - 1)))
            for number, item in enumerate(value):
                self.one(item, f"{name}/{number:0{width}d}")
        else:
            name = f"{stem}.json"
            (self.folder / name).write_text(_json(value), encoding="utf-8")
        return name

    def path(self, source: Path, stem: str) -> str:
        source = source.expanduser().resolve()
        if not source.exists():
            raise ConfigError(f"cannot read context {str(source)!r}: no such file or directory")
        if source.is_file() and source.suffix.lower() in (".parquet", ".pq"):
            name = f"{stem}.csv"
            _write_table(_read_parquet(source), self.folder / name)
            return name
        name = stem + ("" if source.is_dir() else source.suffix)
        self._attach(source, name)
        return name


def _json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=1)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"the bash backend cannot write a {type(value).__name__} context as a file "
            f"({exc}); pass a str, a list of str, a dict of those, a pandas DataFrame, "
            "JSON data or a Path"
        ) from None


def _safe_name(key: Any, taken: set[str]) -> str:
    name = _UNSAFE.sub("_", str(key)) or "_"
    if name.startswith("."):
        name = "_" + name
    base, number = name, 2
    while name.lower() in taken:
        name, number = f"{base}-{number}", number + 1
    taken.add(name.lower())
    return name


def place_context(value: Any, folder: Path, *, link: bool) -> ContextPlan:
    """Write ``value`` into ``folder`` (emptied first) per the module's
    conventions. ``link``: symlink host paths (unsandboxed) rather than
    plan read-only binds over placeholders (sandboxed)."""
    clear_folder(folder)
    placer = _Placer(folder, link)
    plan = placer.plan
    if isinstance(value, Path) and value.expanduser().is_dir():
        root = value.expanduser().resolve()
        plan.root, plan.context = root, ""
        count = sum(1 for _ in root.iterdir())
        plan.hint = f"the directory {root.name!r} ({count:,} entries)"
    elif isinstance(value, Mapping):
        taken: set[str] = set()
        names = [placer.one(item, _safe_name(key, taken)) for key, item in value.items()]
        plan.context = ""
        listed = ", ".join(names[:_LISTED_NAMES]) + (", ..." if len(names) > _LISTED_NAMES else "")
        plan.hint = f"{len(names)} named contexts, one file or folder each: {listed}"
    elif isinstance(value, list | tuple):
        width = max(DOC_NAME_DIGITS, len(str(len(value) - 1)))
        for number, item in enumerate(value):
            placer.one(item, f"{number:0{width}d}")
        plan.context = ""
        first, last = f"{0:0{width}d}", f"{max(len(value) - 1, 0):0{width}d}"
        plan.hint = f"{len(value):,} documents, one file each, in order: {first}.txt ... {last}.txt"
    elif _is_table(value):
        rows = _write_table(value, folder / "context.csv")
        plan.context = "context.csv"
        columns = ", ".join(map(str, list(value.columns)[:_LISTED_NAMES]))
        plan.hint = f"a CSV file with a header line and {rows:,} rows; columns: {columns}"
    elif isinstance(value, Path):
        source = value.expanduser()
        plan.context = placer.path(source, source.stem or "context")
        size = source.stat().st_size
        converted = "" if plan.context.endswith(source.suffix) else ", converted to CSV"
        plan.hint = f"the file {source.name!r} ({size:,} bytes{converted})"
    else:
        plan.context = placer.one(value, "context")
        plan.hint = _hint(value)
    return plan


def _hint(value: Any) -> str:
    if value is None or isinstance(value, str):
        text = value or ""
        lines = text.count("\n") + (1 if text and not text.endswith("\n") else 0)
        return f"a text file of {len(text):,} characters, {lines:,} line{'' if lines == 1 else 's'}"
    if isinstance(value, bytes | bytearray):
        return f"a binary file of {len(value):,} bytes"
    return "a JSON file"
