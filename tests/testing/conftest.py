"""Fixtures shared by the fake server's tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    # One loop per module: litellm caches its async HTTP clients per event loop.
    with asyncio.Runner() as loop_runner:
        yield loop_runner
