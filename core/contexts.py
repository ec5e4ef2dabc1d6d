"""Context values: reading files for in-memory backends, and the metadata
the root model is shown instead of the context itself."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from polyrlm.config import CHARS_PER_TOKEN, PREVIEW_CHARS
from polyrlm.errors import ConfigError

__all__ = [
    "TABLE_SUFFIXES",
    "clear_folder",
    "describe_context",
    "load_python_context",
    "text_size",
]

#: File suffixes read as tables (DataFrames) rather than text.
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".parquet", ".pq"})
#: Lengths of the first documents listed in the metadata of a list context.
_LISTED_LENGTHS = 10


def _read_table(path: Path) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise ConfigError(
            f'reading {path.name} needs pandas: pip install "polyrlm[python]"'
        ) from exc
    if path.suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


def _read_path(path: Path) -> Any:
    try:
        if path.is_dir():
            return [p.read_text(errors="replace") for p in sorted(path.iterdir()) if p.is_file()]
        if path.suffix.lower() in TABLE_SUFFIXES:
            return _read_table(path)
        if path.suffix.lower() == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if path.suffix.lower() == ".json":
            return json.loads(path.read_text())
        return path.read_text(errors="replace")
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read context {str(path)!r}: {exc}") from exc


def clear_folder(folder: Path) -> None:
    """Make ``folder`` exist and hold nothing, keeping the folder itself (a
    running sandbox may hold it open); symlinks in it are removed, never followed."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()


def load_python_context(context: Any) -> Any:
    """The context as Python values: paths read (text -> str, a directory ->
    list of texts, CSV/Parquet -> DataFrame, JSON -> objects), named contexts
    read one by one; anything else as it is."""
    if isinstance(context, Path):
        return _read_path(context)
    if isinstance(context, Mapping):
        return {str(k): load_python_context(v) for k, v in context.items()}
    return context


def text_size(value: Any) -> int:
    """Characters of a context value (documents summed; tables by repr)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(text_size(v) for v in value.values())
    if isinstance(value, Sequence):
        return sum(text_size(v) for v in value)
    if isinstance(value, Path):
        try:
            return value.stat().st_size
        except OSError:
            return 0
    return len(repr(value)) if not hasattr(value, "shape") else int(value.memory_usage().sum())


def _preview(text: str) -> str:
    return text[:PREVIEW_CHARS] + (" ..." if len(text) > PREVIEW_CHARS else "")


def describe_context(context: Any) -> dict[str, Any]:
    """Type, size in characters and estimated tokens, and a short preview
    or schema: what the root model learns about the context up front."""
    size = text_size(context)
    meta: dict[str, Any] = {
        "type": type(context).__name__,
        "chars": size,
        "est_tokens": size // CHARS_PER_TOKEN,
    }
    if isinstance(context, str):
        meta["lines"] = context.count("\n") + 1 if context else 0
        meta["preview"] = _preview(context)
    elif isinstance(context, Mapping):
        meta["names"] = {str(k): describe_context(v)["type"] for k, v in context.items()}
    elif isinstance(context, Path):
        meta["path"] = context.name
        meta["kind"] = "directory" if context.is_dir() else (context.suffix.lstrip(".") or "file")
    elif hasattr(context, "columns") and hasattr(context, "dtypes"):
        meta["rows"] = len(context)
        meta["columns"] = {str(c): str(t) for c, t in context.dtypes.items()}
    elif isinstance(context, Sequence):
        meta["items"] = len(context)
        meta["item_chars"] = [text_size(v) for v in context[:_LISTED_LENGTHS]]
        if context and isinstance(context[0], str):
            meta["preview"] = _preview(context[0])
    return meta
