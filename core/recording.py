"""What a trajectory keeps so that a run can be replayed: the root context
(itself when small, a fingerprint when large) and the run's settings.

A context is written as a tagged JSON tree: ``{"str": ...}``, ``{"json": ...}``
(lists and numbers that survive a JSON round trip unchanged), ``{"dict": {...}}``,
``{"path": ..., "fingerprint": ...}`` (files are referred to, never copied) and
``{"frame": ...}`` (a small DataFrame as base64 Arrow IPC). A context larger
than :data:`REPLAY_INLINE_CONTEXT_CHARS`, or of a type with no exact JSON
form, is kept as a fingerprint only; replaying it needs the context again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from polyrlm.config import CREDENTIAL_OPTIONS
from polyrlm.contexts import text_size
from polyrlm.errors import ConfigError

__all__ = [
    "FINGERPRINT_SAMPLE_BYTES",
    "REPLAY_INLINE_CONTEXT_CHARS",
    "context_from_record",
    "context_record",
    "fingerprint",
    "public_options",
]

#: Characters of context kept in the trajectory itself (in the root
#: ``run_started`` line); a larger context is kept as a fingerprint.
REPLAY_INLINE_CONTEXT_CHARS = 8 * 1024 * 1024
#: Bytes hashed from each end of a large context or file for its fingerprint
#: (with its size and type), so fingerprinting a huge input stays instant.
FINGERPRINT_SAMPLE_BYTES = 1024 * 1024
#: Items (list entries, table rows) hashed from each end of a long one.
_SAMPLE_ITEMS = 1000


class _NotInline(Exception):
    """The value has no exact JSON form."""


def _sampled(kind: str, size: int, head: bytes, tail: bytes) -> str:
    digest = hashlib.sha256(f"{kind}:{size}:".encode())
    digest.update(head)
    digest.update(tail)
    return f"{kind}:{size}:{digest.hexdigest()[:32]}"


def _file_fingerprint(path: Path) -> str:
    if path.is_dir():
        entries = sorted(
            f"{p.relative_to(path)}:{p.stat().st_size}" for p in path.rglob("*") if p.is_file()
        )
        return _sampled("dir", len(entries), "\n".join(entries).encode(), b"")
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(FINGERPRINT_SAMPLE_BYTES)
        fh.seek(max(size - FINGERPRINT_SAMPLE_BYTES, len(head)))
        tail = fh.read()
    return _sampled("file", size, head, tail)


def fingerprint(value: Any) -> str:
    """A short identity of a context value: its type, size and a hash of
    its whole content when small, of both ends when large (never a copy of
    a large value)."""
    n, kind = FINGERPRINT_SAMPLE_BYTES, type(value).__name__
    if isinstance(value, Path):
        try:
            return _file_fingerprint(value)
        except OSError as exc:
            raise ConfigError(f"cannot fingerprint context {str(value)!r}: {exc}") from exc
    if isinstance(value, str):
        ends = (value, "") if len(value) <= 2 * n else (value[:n], value[-n:])
        head, tail = (part.encode("utf-8", "surrogatepass") for part in ends)
        return _sampled(kind, len(value), head, tail)
    if isinstance(value, Mapping):
        parts = [f"{k!r}={fingerprint(v)}" for k, v in value.items()]
        return _sampled(kind, len(value), "\n".join(parts).encode(), b"")
    if hasattr(value, "columns") and hasattr(value, "dtypes"):
        import pandas as pd

        rows = _SAMPLE_ITEMS if len(value) > 2 * _SAMPLE_ITEMS else len(value)
        frames = (value.head(rows), value.tail(rows) if rows < len(value) else value.head(0))
        hashed = (pd.util.hash_pandas_object(f, index=True).to_numpy() for f in frames)
        head, tail = (h.tobytes() for h in hashed)
        return _sampled(kind, len(value), head + repr(list(value.dtypes.items())).encode(), tail)
    if isinstance(value, list | tuple) and len(value) > 2 * _SAMPLE_ITEMS:
        items = (value[:_SAMPLE_ITEMS], value[-_SAMPLE_ITEMS:])
        head, tail = (_json_bytes(list(i)) for i in items)
        return _sampled(kind, len(value), head, tail)
    return _sampled(kind, 0, _json_bytes(value), b"")


def _json_bytes(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, default=repr, ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def _frame_record(frame: Any) -> dict[str, Any]:
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise _NotInline from exc
    try:
        table = pa.Table.from_pandas(frame)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        record = {"frame": base64.b64encode(sink.getvalue().to_pybytes()).decode()}
        back = _decode(record)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise _NotInline from exc
    if not (back.equals(frame) and list(back.dtypes) == list(frame.dtypes)):
        raise _NotInline
    return record


def _encode(value: Any) -> dict[str, Any]:
    if isinstance(value, Path):
        return {"path": str(value.resolve()), "fingerprint": fingerprint(value)}
    if isinstance(value, str):
        return {"str": value}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise _NotInline
        return {"dict": {k: _encode(v) for k, v in value.items()}}
    if hasattr(value, "columns") and hasattr(value, "dtypes"):
        return _frame_record(value)
    try:
        if json.loads(json.dumps(value, allow_nan=False)) == value and type(value) in (
            list,
            int,
            float,
            bool,
            type(None),
        ):
            return {"json": value}
    except (TypeError, ValueError):
        pass
    raise _NotInline


def _decode(record: Mapping[str, Any]) -> Any:
    if "str" in record:
        return str(record["str"])
    if "json" in record:
        return record["json"]
    if "dict" in record:
        return {k: _decode(v) for k, v in record["dict"].items()}
    if "path" in record:
        path = Path(record["path"])
        if not path.exists():
            raise ConfigError(f"the recorded context {str(path)!r} is gone; pass the context")
        now = fingerprint(path)
        if now != record["fingerprint"]:
            raise ConfigError(
                f"the recorded context {str(path)!r} changed since the run "
                f"({record['fingerprint']} then, {now} now)"
            )
        return path
    if "frame" in record:
        import pyarrow as pa

        reader = pa.ipc.open_stream(pa.py_buffer(base64.b64decode(record["frame"])))
        return reader.read_all().to_pandas()
    raise ConfigError(f"not a context record: keys {sorted(record)}")


def context_record(context: Any) -> dict[str, Any]:
    """The context as the root ``run_started`` line keeps it."""
    record: dict[str, Any] = {"type": type(context).__name__, "fingerprint": fingerprint(context)}
    if isinstance(context, Path) or text_size(context) <= REPLAY_INLINE_CONTEXT_CHARS:
        with contextlib.suppress(_NotInline):
            record["value"] = _encode(context)
    return record


def context_from_record(record: Mapping[str, Any] | None, given: Any = None) -> Any:
    """The context to replay with: ``given`` when passed (checked against
    the recorded fingerprint), else the recorded one."""
    if record is None:
        raise ConfigError("the trajectory has no context record (not a root run_started line)")
    if given is not None:
        if fingerprint(given) != record["fingerprint"]:
            raise ConfigError(
                f"the context given is not the recorded one (fingerprint {fingerprint(given)}, "
                f"recorded {record['fingerprint']})"
            )
        return given
    if "value" not in record:
        raise ConfigError(
            f"the trajectory keeps only a fingerprint of its {record['type']} context (too "
            f"large, or no exact JSON form): pass the context to replay it"
        )
    return _decode(record["value"])


def public_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Model options without credentials, fit for a trajectory or a cache key."""
    return {k: v for k, v in options.items() if k not in CREDENTIAL_OPTIONS}
