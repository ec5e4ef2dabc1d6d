"""How a context reaches the DuckDB worker process: as files and paths.

The host never reads a file context: a ``Path`` goes to the worker as its
path, and the worker plans its table itself (memory-mapping a text file,
making a view over a reader). An in-memory value is written once into the
environment's own directory (mode 0700, removed on close): a text as its
UTF-8 bytes, which the worker memory-maps and cuts into lines as it does a
text file; documents, DataFrames and Arrow tables as Arrow IPC files, which
the worker memory-maps (no copy). What travels on the socket is a small JSON
plan, written by the host and read by the worker, never the other way.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from polyrlm.backends.sql.sources import (
    Source,
    named_values,
    plan_source,
    shipped_text_source,
    text_of,
)

__all__ = ["ship", "unship"]

_SOURCE_FIELDS = ("name", "kind", "origin", "select", "rows")


def _write_arrow(table: Any, path: Path) -> None:
    ipc = importlib.import_module("pyarrow.ipc")
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)


def _read_arrow(path: str) -> Any:
    pa = importlib.import_module("pyarrow")
    return pa.ipc.open_file(pa.memory_map(path)).read_all()  # buffers stay in the file


def ship(context: Any, folder: Path) -> list[dict[str, Any]]:
    """The plan of ``context`` for a worker; in-memory values written to ``folder``."""
    folder.mkdir(mode=0o700, exist_ok=True)
    plan: list[dict[str, Any]] = []
    for number, (name, value) in enumerate(named_values(context)):
        if isinstance(value, Path):
            plan.append({"name": name, "path": str(value)})
            continue
        text = text_of(value)
        if text is not None:
            path = folder / f"{number}.txt"
            # "replace" turns lone surrogates into "?": one character each, lengths kept.
            path.write_bytes(text.encode("utf-8", "replace"))
            plan.append({"name": name, "text": str(path), "chars": len(text)})
            continue
        source = plan_source(name, value)  # documents and tables, as Arrow
        arrow = {}
        for part, (hidden, table) in enumerate(source.arrow.items()):
            path = folder / f"{number}-{part}.arrow"
            _write_arrow(table, path)
            arrow[hidden] = str(path)
        fields = {k: getattr(source, k) for k in _SOURCE_FIELDS}
        plan.append({"name": name, "source": fields, "arrow": arrow})
    return plan


def unship(plan: list[dict[str, Any]]) -> list[Source]:
    """The worker's side of :func:`ship`: the sources, planned here."""
    sources = []
    for item in plan:
        name = str(item["name"])
        if "path" in item:
            sources.append(plan_source(name, Path(item["path"])))
        elif "text" in item:
            sources.append(shipped_text_source(name, Path(item["text"]), int(item["chars"])))
        else:
            arrow = {hidden: _read_arrow(path) for hidden, path in item["arrow"].items()}
            sources.append(Source(**item["source"], arrow=arrow))
    return sources
