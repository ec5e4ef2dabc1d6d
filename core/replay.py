"""Deterministic replay: re-run a recorded trajectory offline.

Every model call is served from the record (root replies by turn, sub-call
replies by request digest) while the code runs again for real in a fresh
environment. Afterwards each step (code block) of the replay is compared
with the recorded one: its code, output, error and the answer it set. The
first divergence says where and why; a tampered record shows up at the step
where it was changed.

Use :func:`replay` (or ``polyrlm replay RUN.jsonl``) to rebuild the run from
the settings the trajectory keeps, or ``RLM(..., replay=path)`` to serve a
record to a run you configure yourself.

A killed run's record ends early: its prefix is replayed and compared, and
the report says where the record ends (``record_ended_early``,
``record_lines``) and which half-written last line was ignored
(``incomplete_line``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from polyrlm.events import Event, RunStarted
from polyrlm.recording import context_from_record
from polyrlm.records import Budget, Divergence, ReplayReport
from polyrlm.replay_book import ReplayBook, load_events
from polyrlm.result import Result
from polyrlm.rlm import RLM
from polyrlm.tools import Tool
from polyrlm.trajectory import RecordedTrajectory, load_trajectory_file

__all__ = ["Divergence", "ReplayBook", "ReplayReport", "load_events", "replay"]


def replay(
    source: str | Path | Sequence[Event],
    *,
    context: Any = None,
    backend: str | None = None,
    log: str | Path | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> Result:
    """Re-run a recorded trajectory with the settings it keeps, serving every
    model call from it; ``result.replay`` says whether it came out the same.

    ``context`` is needed when the trajectory kept only a fingerprint of it
    (a large context); it is checked against that fingerprint. ``backend``
    runs the record on another backend (expect divergences).
    """
    record = (
        load_trajectory_file(source)
        if isinstance(source, str | Path)
        else RecordedTrajectory(list(source), len(source))
    )
    events = load_events(record.events)
    root = next(e for e in events if isinstance(e, RunStarted) and e.depth == 0)
    settings = root.settings or {}
    ctx = context_from_record(root.context_source, context)
    rlm = RLM(
        root.model,
        root.sub_model,
        backend=backend or root.backend,
        budget=Budget.model_validate(settings.get("budget", {})),
        child_model=settings.get("child_model"),
        backend_config=settings.get("backend_config"),
        max_concurrency=settings.get("max_concurrency", 1) or 1,
        max_concurrency_by_depth={
            int(d): n for d, n in (settings.get("max_concurrency_by_depth") or {}).items()
        },
        windows=settings.get("windows"),
        stop_at_code_end=settings.get("stop_at_code_end", True),
        pipeline=settings.get("pipeline", False),
        code_channel=settings.get("code_channel", "fences"),
        prompt_profile=settings.get("prompt_profile", "full"),
        sub_models=settings.get("sub_models") or None,
        tools=[Tool.from_record(t) for t in settings.get("tools") or ()],
        answer_type=settings.get("answer_schema"),
        sub_model_options=settings.get("sub_options"),
        log=log,
        on_event=on_event,
        replay=events,
        **settings.get("root_options", {}),
    )
    result = rlm.completion(root.question, ctx)
    if result.replay is None:
        return result
    # What only the file tells: the last event's line, a half-written line after it.
    report = result.replay.model_copy(
        update={
            "record_lines": record.last_line,
            "incomplete_line": record.incomplete_line,
            "record_notes": tuple(record.notes()),
        }
    )
    return result.model_copy(update={"replay": report})
