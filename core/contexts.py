"""Context values: checking them before a run, reading files for in-memory
backends, and the metadata the root model is shown instead of the context.

:func:`check_context` is the one place that refuses bad input up front (an
empty file, a binary one, a FIFO or a device, text that is not valid
Unicode), before a backend reads anything or a trajectory is opened; the
readers here decode strictly with the same message, so nothing turns into
replacement characters on the way.
"""

from __future__ import annotations

import codecs
import glob
import itertools
import json
import os
import re
import shutil
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from polyrlm.config import CHARS_PER_TOKEN, PREVIEW_CHARS
from polyrlm.errors import ConfigError

__all__ = [
    "PARSED_SUFFIXES",
    "TABLE_SUFFIXES",
    "check_context",
    "clear_folder",
    "decode_text",
    "describe_context",
    "directory_files",
    "load_python_context",
    "text_size",
]

#: File suffixes read as tables (DataFrames) rather than text.
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".parquet", ".pq"})
#: Suffixes of files a backend parses with a reader of its own (tables, JSON,
#: DuckDB databases, compressed files): :func:`check_context` does not scan
#: them as UTF-8 text (Parquet is binary by design); their readers say what is wrong.
PARSED_SUFFIXES = TABLE_SUFFIXES | {".json", ".jsonl", ".ndjson", ".duckdb", ".ddb", ".gz", ".zst"}
#: Lengths of the first documents listed in the metadata of a list context.
_LISTED_LENGTHS = 10
#: Bytes read at a time when a text file is checked (memory stays flat).
_SCAN_CHUNK_BYTES = 1024 * 1024
#: Characters that make a path a pattern (the sql backend expands those).
_GLOB_CHARS = frozenset("*?[")
_SURROGATE = re.compile("[\ud800-\udfff]")
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


# -- checking ---------------------------------------------------------------


def _first_bad_byte(chunks: Iterable[bytes]) -> tuple[int, int] | None:
    """Offset and value of the first byte that keeps ``chunks`` from being
    UTF-8 text (invalid, a sequence cut off at the end, or NUL), or None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    fed = 0
    for chunk in itertools.chain(chunks, [b""]):  # the empty one ends the stream
        held = len(decoder.getstate()[0])  # bytes of a sequence cut by this chunk's start
        bad = None
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:  # its object is the held bytes + this chunk
            bad = (fed - held + exc.start, exc.object[exc.start])
        nul = chunk.find(b"\0")  # a NUL byte is never inside a multi-byte sequence
        if nul >= 0 and (bad is None or fed + nul < bad[0]):
            bad = (fed + nul, 0)
        if bad is not None:
            return bad
        fed += len(chunk)
    return None


def _not_text(source: str, bad: tuple[int, int]) -> ConfigError:
    offset, byte = bad
    if byte == 0:
        return ConfigError(
            f"context {source} is not text: a NUL byte at offset {offset:,} (a binary file?)"
        )
    return ConfigError(
        f"context {source} is not UTF-8 text: byte 0x{byte:02x} at offset {offset:,} "
        "(a binary file? pass text, or a table: CSV, TSV, Parquet, JSON)"
    )


def decode_text(data: bytes, source: str) -> str:
    """``data`` as UTF-8 text, decoded strictly; else :class:`ConfigError`
    naming ``source`` (``'notes.txt'``, ``on standard input``) and the
    offset of the first bad byte."""
    bad = _first_bad_byte([data])
    if bad is not None:
        raise _not_text(source, bad)
    return data.decode("utf-8")


def _check_text_file(path: Path, source: str) -> None:
    try:
        with path.open("rb") as fh:
            bad = _first_bad_byte(iter(lambda: fh.read(_SCAN_CHUNK_BYTES), b""))
    except OSError as exc:
        raise ConfigError(f"cannot read context {source}: {exc.strerror or exc}") from exc
    if bad is not None:
        raise _not_text(source, bad)


def _readable(path: Path, source: str, mode: int) -> None:
    if not os.access(path, mode):
        raise ConfigError(f"cannot read context {source}: permission denied")


def _check_path(path: Path) -> None:
    spec, target = str(path), path.expanduser()
    source = repr(spec)
    try:
        info = target.stat()  # follows a symlink: its target is what gets read
    except FileNotFoundError:
        if _GLOB_CHARS & set(spec):
            return  # a pattern: the sql backend expands it, the others refuse it
        raise ConfigError(f"cannot read context {source}: no such file or directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read context {source}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        _readable(target, source, os.R_OK | os.X_OK)
        files = directory_files(target)
        if not files:
            raise ConfigError(
                f"context directory {source} holds no files (its documents are the regular, "
                "not hidden, files directly in it)"
            )
        for file in files:  # each is a document; an empty one is allowed
            if file.suffix.lower() not in PARSED_SUFFIXES:
                _check_text_file(file, repr(str(Path(spec) / file.name)))
        return
    if not stat.S_ISREG(info.st_mode):
        # Refused before opening: reading one may never end (a FIFO, /dev/zero).
        kind = next((name for test, name in _SPECIAL_FILES if test(info.st_mode)), "special")
        raise ConfigError(
            f"context {source} is {kind}, not a regular file or a directory: save its "
            "content to a file (or pass it as a str)"
        )
    _readable(target, source, os.R_OK)
    if info.st_size == 0:
        raise ConfigError(
            f"context {source} is an empty file (0 bytes): pass a file with something in it, "
            "or no context"
        )
    if target.suffix.lower() not in PARSED_SUFFIXES:
        _check_text_file(target, source)


def _check_str(text: str) -> None:
    if text.isascii():  # the common case, at C speed
        return
    found = _SURROGATE.search(text)
    if found is not None:
        raise ConfigError(
            f"the context text is not valid Unicode: a lone surrogate "
            f"U+{ord(found.group()):04X} at character {found.start():,} (bytes decoded with "
            "errors='surrogateescape'? decode them strictly, or pass the file as a Path)"
        )


def check_context(context: Any) -> None:
    """Refuse a context that no backend can use as given, before anything
    reads it: raises :class:`ConfigError` saying what is wrong.

    A ``Path`` must be a readable regular file or directory (a FIFO, a
    socket or a device such as ``/dev/zero`` is refused unopened); a file
    must not be empty; a file read as text (any suffix but
    :data:`PARSED_SUFFIXES`) must be UTF-8 with no NUL byte (the first bad
    byte's offset is named); a directory must hold at least one document
    (:func:`directory_files`), each of them text by the same rule. A
    ``str`` must be valid Unicode (no lone surrogates). Lists and named
    contexts are checked item by item. ``""`` and ``None`` mean no context
    and pass; a path pattern that matches nothing is left to the backend.
    """
    if isinstance(context, Path):
        _check_path(context)
    elif isinstance(context, str):
        _check_str(context)
    elif isinstance(context, Mapping):
        for value in context.values():
            check_context(value)
    elif isinstance(context, list | tuple):
        for item in context:
            check_context(item)


# -- reading ----------------------------------------------------------------


def directory_files(folder: Path) -> list[Path]:
    """The documents of a directory context: its regular files that are not
    hidden, in name order; subdirectories are not read (the sql backend's rule)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())


def _read_text(path: Path) -> str:
    return decode_text(path.read_bytes(), repr(str(path)))


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
            return [_read_text(p) for p in directory_files(path)]
        if path.suffix.lower() in TABLE_SUFFIXES:
            return _read_table(path)
        if path.suffix.lower() == ".jsonl":
            lines = _read_text(path).split("\n")  # not splitlines(): JSON keeps U+2028 raw
            return [json.loads(line) for line in lines if line.strip()]
        if path.suffix.lower() == ".json":
            return json.loads(_read_text(path))
        return _read_text(path)
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
    read one by one; anything else as it is. Text is decoded strictly (UTF-8)."""
    if isinstance(context, Path):
        return _read_path(context)
    if isinstance(context, Mapping):
        return {str(k): load_python_context(v) for k, v in context.items()}
    return context


# -- describing -------------------------------------------------------------


def _path_files(path: Path) -> list[Path] | None:
    """The files a directory or a pattern stands for; None for one file."""
    if path.is_dir():
        return directory_files(path)
    if not path.exists() and _GLOB_CHARS & set(str(path)):
        return sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    return None


def _bytes(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total


def text_size(value: Any) -> int:
    """Characters of a context value (documents summed; tables by memory);
    a ``Path`` by the bytes of its file, or of a directory's documents."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(text_size(v) for v in value.values())
    if isinstance(value, Sequence):
        return sum(text_size(v) for v in value)
    if isinstance(value, Path):
        target = value.expanduser()
        files = _path_files(target)
        return _bytes([target] if files is None else files)
    return len(repr(value)) if not hasattr(value, "shape") else int(value.memory_usage().sum())


def _preview(text: str) -> str:
    return text[:PREVIEW_CHARS] + (" ..." if len(text) > PREVIEW_CHARS else "")


def _describe_path(path: Path) -> dict[str, Any]:
    # Bytes, not characters: counting characters would read the whole file.
    target = path.expanduser()
    files = _path_files(target)
    size = _bytes([target] if files is None else files)
    meta: dict[str, Any] = {"type": type(path).__name__, "bytes": size}
    if files is not None:
        meta["files"] = len(files)
    meta["est_tokens"] = size // CHARS_PER_TOKEN
    meta["path"] = path.name
    if target.is_dir():
        meta["kind"] = "directory"
    elif files is not None:
        meta["kind"] = "pattern"
    else:
        meta["kind"] = target.suffix.lstrip(".") or "file"
    return meta


def describe_context(context: Any) -> dict[str, Any]:
    """Type, size and estimated tokens, and a short preview or schema: what
    the root model learns about the context up front. Sizes are ``chars``
    for values in memory, ``bytes`` (and ``files``) for a ``Path``."""
    if isinstance(context, Path):
        return _describe_path(context)
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
    elif hasattr(context, "columns") and hasattr(context, "dtypes"):
        meta["rows"] = len(context)
        meta["columns"] = {str(c): str(t) for c, t in context.dtypes.items()}
    elif isinstance(context, Sequence):
        meta["items"] = len(context)
        meta["item_chars"] = [text_size(v) for v in context[:_LISTED_LENGTHS]]
        if context and isinstance(context[0], str):
            meta["preview"] = _preview(context[0])
    return meta
