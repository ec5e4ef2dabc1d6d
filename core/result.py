"""What a run returns: :class:`Result` (its trajectory is the run's events)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from polyrlm.events import Event
from polyrlm.records import Frozen, ReplayReport, StopReason, Usage

__all__ = ["Result"]


class Result(Frozen):
    """What :meth:`RLM.completion` returns."""

    answer: Any = Field(None, description="The answer read from the environment.")
    stop_reason: StopReason
    fallback: bool = Field(False, description="Answer came from the last-chance turn.")
    error: str | None = Field(None, description="The fatal error, when stop_reason is error.")
    usage: Usage
    trajectory: tuple[Event, ...] = Field((), description="Every event of the tree, in order.")
    replay: ReplayReport | None = Field(
        None, description="When run with replay=...: how it compares with the record."
    )
