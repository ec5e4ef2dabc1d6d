"""Where the complete SQL statements of a block being written end, for
pipelined turns (:mod:`polyrlm.pipeline`): DuckDB's own parser decides.

A statement is complete when a line ends with ``;`` and everything up to
there parses (a ``;`` inside a string or a comment does not end one). The
parse runs on a connection of its own that holds no data and runs nothing.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["sql_ready"]

_PARSER: dict[str, Any] = {}
_LOCK = threading.Lock()


def _parse(code: str) -> int:
    """Statements DuckDB finds in ``code``; -1 when it does not parse."""
    from polyrlm.backends.sql.engine import load_duckdb

    with _LOCK:
        if "conn" not in _PARSER:
            _PARSER["conn"] = load_duckdb().connect(":memory:")
        try:
            return len(_PARSER["conn"].extract_statements(code))
        except Exception:  # DuckDB's parser error: not complete (yet)
            return -1


def sql_ready(code: str) -> int:
    """Characters at the start of ``code`` (complete lines of an SQL block
    being written) that hold whole statements safe to run now; 0: none."""
    if not code.endswith(("\n", "\r")) or not code.rstrip().endswith(";"):
        return 0
    return len(code) if _parse(code) > 0 else 0
