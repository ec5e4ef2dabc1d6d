"""Trajectories as training data (``polyrlm export``).

::

    from polyrlm.plugins.export import rl_records, sft_records, write_jsonl

    records = sft_records("runs/", max_input_chars=100_000)  # files or directories
    write_jsonl(records, "sft.jsonl")
    rl = rl_records("runs/", scores="scores.json", include_failed=True)

See :mod:`polyrlm.plugins.export.records` (what is exported),
:mod:`~polyrlm.plugins.export.conversation` (how a conversation is rebuilt)
and :mod:`~polyrlm.plugins.export.scores` (where scores come from).
"""

from __future__ import annotations

from polyrlm.plugins.export.conversation import Run, message_chars, runs_of
from polyrlm.plugins.export.records import (
    ExportStats,
    RlRecord,
    SftRecord,
    read_runs,
    rl_records,
    sft_records,
    write_jsonl,
)
from polyrlm.plugins.export.scores import ScoreTable, TaskScorer, load_scores

__all__ = [
    "ExportStats",
    "RlRecord",
    "Run",
    "ScoreTable",
    "SftRecord",
    "TaskScorer",
    "load_scores",
    "message_chars",
    "read_runs",
    "rl_records",
    "runs_of",
    "sft_records",
    "write_jsonl",
]
