"""Text as an Arrow table of lines ``(line_no, text)`` without copying it.

The text's UTF-8 bytes (a Python ``bytes`` object, or a memory-mapped file)
stay where they are: the ``text`` column is an Arrow *string view* array,
16 bytes a line that point into those bytes (DuckDB reads string views in
place), so a file's lines cost 24 bytes each in memory (the view and
``line_no``), not the file's size. Lines are cut as ``str.split("\\n")`` cuts
them: a ``\\r`` stays, a final ``\\n`` gives a last, empty line.
"""

from __future__ import annotations

import importlib
from typing import Any

from polyrlm.errors import ConfigError

__all__ = ["TEXT_SCAN_CHUNK_BYTES", "VIEW_CHUNK_LINES", "VIEW_SEGMENT_BYTES", "lines_table"]

#: Bytes of text scanned for newlines at once (bounds the scan's scratch memory).
TEXT_SCAN_CHUNK_BYTES = 64 * 2**20
#: Lines whose string views are built at once (bounds that step's scratch memory).
VIEW_CHUNK_LINES = 1_000_000
#: Bytes of text per Arrow data buffer the views point into: views hold 32-bit
#: offsets, so a text past 2 GiB is cut into overlapping buffers, one per segment.
VIEW_SEGMENT_BYTES = 2**30
_MAX_INT32 = 2**31 - 1


def _line_starts(data: Any) -> Any:
    """Start offsets of the lines of ``data`` (uint8 array), as ``str.split("\\n")``
    cuts them. Scanned in chunks, so a data-sized boolean mask is never made."""
    np = importlib.import_module("numpy")
    parts = [np.zeros(1, dtype=np.int64)]
    for start in range(0, len(data), TEXT_SCAN_CHUNK_BYTES):
        chunk = data[start : start + TEXT_SCAN_CHUNK_BYTES]
        parts.append(np.flatnonzero(chunk == 10).astype(np.int64) + (start + 1))
    return np.concatenate(parts)


def _fill_views(views: Any, data: Any, starts: Any, lengths: Any) -> None:
    """Arrow string views (16 bytes a row: length, then the bytes inline when
    at most 12, else a 4-byte prefix, the buffer index and the offset)."""
    np = importlib.import_module("numpy")
    windows = np.lib.stride_tricks.sliding_window_view
    n, size = len(starts), len(data)
    first = np.zeros((n, 12), dtype=np.uint8)  # the first 12 bytes of each line
    inside = starts <= size - 12
    if size >= 12:
        first[inside] = windows(data, 12)[starts[inside]]
    near_end = ~inside
    if near_end.any():
        base = max(size - 12, 0)
        tail = np.zeros(24, dtype=np.uint8)
        tail[: size - base] = data[base:]
        first[near_end] = windows(tail, 12)[starts[near_end] - base]
    first[np.arange(12)[None, :] >= lengths[:, None]] = 0  # inline data is zero-padded
    views[:, 4:] = first
    words = views.view("<i4")
    words[:, 0] = lengths
    long = lengths > 12
    words[long, 2] = starts[long] // VIEW_SEGMENT_BYTES
    words[long, 3] = starts[long] % VIEW_SEGMENT_BYTES


def lines_table(buffer: Any) -> Any:
    """An Arrow table ``(line_no, text)`` over ``buffer`` without copying it:
    ``text`` is a string-view column whose rows point into the buffer."""
    pa = importlib.import_module("pyarrow")
    np = importlib.import_module("numpy")
    data = np.frombuffer(buffer, dtype=np.uint8)
    starts = _line_starts(data)
    n = len(starts)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1  # the "\n" is not part of the line
    ends[-1] = len(data)
    lengths = ends - starts
    if n and int(lengths.max()) > _MAX_INT32 - VIEW_SEGMENT_BYTES:
        raise ConfigError(
            f"a line of the text is longer than {_MAX_INT32 - VIEW_SEGMENT_BYTES:,} bytes"
        )
    views = np.empty((n, 16), dtype=np.uint8)
    for lo in range(0, n, VIEW_CHUNK_LINES):
        hi = min(lo + VIEW_CHUNK_LINES, n)
        _fill_views(views[lo:hi], data, starts[lo:hi], lengths[lo:hi])
    segments = [
        buffer.slice(k, min(len(data) - k, _MAX_INT32))
        for k in range(0, max(len(data), 1), VIEW_SEGMENT_BYTES)
    ]
    text = pa.Array.from_buffers(pa.string_view(), n, [None, pa.py_buffer(views), *segments])
    line_no = pa.array(np.arange(1, n + 1, dtype=np.int64))
    return pa.table({"line_no": line_no, "text": text})
