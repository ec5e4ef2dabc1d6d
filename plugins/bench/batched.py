"""The ``rlm`` method's runs as one :meth:`RLM.batch` per backend
(``polyrlm bench TASK --method rlm --executor local|ray``): every instance
of the task at once, on the executor's workers, each run independent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from polyrlm.batch import trajectory_path
from polyrlm.events import RunFinished, RunStarted
from polyrlm.plugins.bench.methods import (
    RunRecord,
    record_result,
    rlm_for,
    rlm_question,
    run_record,
)
from polyrlm.plugins.bench.task import Instance, Task
from polyrlm.result import Result

__all__ = ["batch_folder", "run_rlm_batch"]


def batch_folder(log_dir: Path, task: Task, backend: str) -> Path:
    """Where one backend's batch keeps its trajectories (``run-00000.jsonl``, ...)."""
    return log_dir / f"{task.name}-{backend}-rlm"


def _wall_s(result: Result) -> float:
    """A run's own wall time, from its root's first and last events."""
    start = next((e for e in result.trajectory if isinstance(e, RunStarted)), None)
    end = next((e for e in reversed(result.trajectory) if isinstance(e, RunFinished)), None)
    return max(0.0, end.ts - start.ts) if start is not None and end is not None else 0.0


def run_rlm_batch(
    task: Task,
    instances: Sequence[Instance],
    backends: Sequence[str],
    settings: Mapping[str, Any],
    *,
    executor: str,
    max_workers: int | None = None,
    log_dir: Path | None = None,
    status: Mapping[str, str] | None = None,
) -> list[RunRecord]:
    """One record per (instance, backend), backends in order; a backend
    that is not available (``status``) gets a row per instance instead."""
    records: list[RunRecord] = []
    for backend in backends:
        why = (status or {}).get(backend, "")
        if why:
            records += [run_record(i, backend, "rlm", why) for i in instances]
            continue
        folder = batch_folder(log_dir, task, backend) if log_dir is not None else None
        out = rlm_for(backend, **settings).batch(
            [rlm_question(i) for i in instances],
            [i.context for i in instances],
            executor=executor,
            max_workers=max_workers,
            log_dir=folder,
        )
        for index, (instance, result) in enumerate(zip(instances, out.results, strict=True)):
            kept = {} if folder is None else {"trajectory": str(trajectory_path(folder, index))}
            records.append(
                record_result(task, instance, backend, "rlm", result, _wall_s(result), **kept)
            )
    return records
