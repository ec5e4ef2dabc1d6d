"""Shared test set-up: no network, litellm's local price list."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before litellm is imported anywhere: it would fetch a price list otherwise.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
for _key in ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
    os.environ.pop(_key, None)


#: Prefixes of the temporary directories backends make; none may outlive the suite.
LEAK_PREFIXES = (
    "polyrlm-kernel-",
    "polyrlm-bridge-",
    "polyrlm-bash-",
    "polyrlm-sql-",
    "polyrlm-wasm-",
)


def _children() -> set[int]:
    me = os.getpid()
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(stat.parent.name))
    return out


@pytest.fixture(autouse=True, scope="session")
def no_leaked_processes_or_files() -> Iterator[None]:
    """Fails the run when a kernel, a shell or a bridge socket outlives it."""
    tmp = Path(tempfile.gettempdir())
    before = {p for p in tmp.iterdir() if p.name.startswith(LEAK_PREFIXES)}
    children = _children()
    yield
    left = {p for p in tmp.iterdir() if p.name.startswith(LEAK_PREFIXES)} - before
    assert not left, f"temporary directories left behind: {sorted(map(str, left))}"
    alive = _children() - children
    assert not alive, f"child processes left running: {sorted(alive)}"
