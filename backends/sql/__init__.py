"""SQL backend: ``sql``, the context as DuckDB tables (needs the ``sql`` extra).

This module only registers it; the environment loads on first use.
"""

from __future__ import annotations

from collections.abc import Callable

from polyrlm.hookspecs import hookimpl
from polyrlm.registry import BackendSpec

__all__ = ["register_backends"]


@hookimpl
def register_backends(register: Callable[[BackendSpec], None]) -> None:
    register(
        BackendSpec(
            name="sql",
            target="polyrlm.backends.sql.environment:SqlEnvironment",
            requires=("duckdb", "pyarrow", "numpy"),
            extra="sql",
            description="DuckDB SQL in a worker process; the context read-only, no files written.",
        )
    )
