"""Scores of runs, for rewards and the ``--min-score`` filter.

Two sources, each a :class:`Scorer` (a function of a :class:`Run`):

* :class:`ScoreTable`, read from a file (:func:`load_scores`): a JSON object
  mapping a run id or a trajectory file (its path as given, or its name) to
  a score; or rows (a JSON list, JSON lines, or the ``runs`` of a
  ``polyrlm bench`` JSON file) each with a ``score`` and a ``run_id`` or a
  ``trajectory`` (also ``file``). A file's score is its root run's.
* :class:`TaskScorer`: a benchmark task's own scorer
  (``polyrlm.plugins.bench``) called on the root run's answer, against an
  expected value given, or against an instance regenerated from its seed and
  size (tasks are deterministic). Like ``polyrlm bench``, a run that finished
  without an answer scores 0.0; a run whose record ends early has no score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from polyrlm.errors import ConfigError
from polyrlm.plugins.export.conversation import Run

__all__ = [
    "SCORES_MAX_BYTES",
    "ScoreTable",
    "Scorer",
    "TaskScorer",
    "load_scores",
    "parse_instance",
]

#: Largest scores file read, in bytes.
SCORES_MAX_BYTES = 256 * 1024 * 1024
#: Keys a score row may name its run by, in the order they are tried.
ROW_KEYS = ("run_id", "trajectory", "file")

#: A run's score (None: it has none).
Scorer = Callable[[Run], float | None]


def _score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: a score is a finite number or null, not {value!r}")
    return float(value)


class ScoreTable:
    """Scores by run id or by trajectory file. A run id matches any run (a
    child's too); a file key matches the root runs of that file, by the path
    as given, the resolved path, or the file's name."""

    def __init__(self, scores: Mapping[str, float | None], origin: str = "scores") -> None:
        self.scores = dict(scores)
        self.origin = origin

    def __call__(self, run: Run) -> float | None:
        if run.run_id in self.scores:
            return self.scores[run.run_id]
        if run.depth or not run.source:
            return None
        path = Path(run.source)
        for key in (run.source, str(path.resolve()), path.name):
            if key in self.scores:
                return self.scores[key]
        return None

    def check_names(self, sources: Sequence[str]) -> None:
        """A key that is only a file name must not name two of ``sources``."""
        by_name: dict[str, set[str]] = {}
        for source in sources:
            by_name.setdefault(Path(source).name, set()).add(str(Path(source).resolve()))
        for key in self.scores:
            if key in sources:
                continue
            if len(by_name.get(key, ())) > 1:
                raise ConfigError(
                    f"{self.origin}: {key!r} names more than one trajectory file "
                    f"({', '.join(sorted(by_name[key]))}); give the path instead"
                )


def _rows(rows: Sequence[Any], origin: str) -> dict[str, float | None]:
    scores: dict[str, float | None] = {}
    for number, row in enumerate(rows, 1):
        where = f"{origin} row {number}"
        if not isinstance(row, dict) or "score" not in row:
            raise ConfigError(f"{where}: a row is an object with a score")
        key = next((row[k] for k in ROW_KEYS if isinstance(row.get(k), str) and row[k]), None)
        if key is None:
            raise ConfigError(f"{where}: a row names its run by {', '.join(ROW_KEYS)}")
        score = _score(row["score"], where)
        if key in scores and scores[key] != score:
            raise ConfigError(f"{where}: {key!r} is given two different scores")
        scores[key] = score
    return scores


def _parse(text: str, origin: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise ConfigError(f"{origin} line {number}: not JSON ({exc})") from None
    return rows


def load_scores(path: str | Path) -> ScoreTable:
    """The scores in ``path`` (see the module's description)."""
    origin = f"--scores {str(path)!r}"
    file = Path(path)
    try:
        if not file.is_file():
            raise ConfigError(f"{origin}: not a file")
        if file.stat().st_size > SCORES_MAX_BYTES:
            raise ConfigError(f"{origin}: larger than {SCORES_MAX_BYTES:,} bytes")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{origin}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{origin}: not UTF-8 text") from None
    data = _parse(text, origin)
    if isinstance(data, dict) and isinstance(data.get("runs"), list):  # polyrlm bench's JSON
        return ScoreTable(_rows(data["runs"], origin), origin)
    if isinstance(data, dict) and "score" in data and any(k in data for k in ROW_KEYS):
        data = [data]  # JSON lines of one row
    if isinstance(data, list):
        return ScoreTable(_rows(data, origin), origin)
    if isinstance(data, dict):
        table = {str(k): _score(v, f"{origin} key {k!r}") for k, v in data.items()}
        return ScoreTable(table, origin)
    raise ConfigError(f"{origin}: expected an object of scores or rows with a score")


def parse_instance(text: str) -> tuple[int, int]:
    """``"SEED:SIZE"`` -> ``(seed, size)`` (size in tokens; k and M allowed)."""
    from polyrlm.plugins.bench.compare import parse_sizes

    seed, sep, size = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(seed), parse_sizes(size)[0]
    except (ValueError, ConfigError):
        raise ConfigError(f"bad --reward-instance {text!r}: give SEED:SIZE, e.g. 0:10000") from None


class TaskScorer:
    """A benchmark task's scorer on root runs' answers: against ``expected``,
    or against the instance of ``instance`` = (seed, size), regenerated."""

    def __init__(
        self, task: str, *, expected: Any = None, instance: tuple[int, int] | None = None
    ) -> None:
        from polyrlm.plugins.bench.task import Instance, get_task

        if (expected is None) == (instance is None):
            raise ConfigError("a task's scorer needs either an expected answer or an instance")
        self.task = get_task(task)
        self.generated = instance is not None
        if instance is not None:
            self.instance = self.task.generate(*instance)
        else:
            self.instance = Instance(
                task=self.task.name, seed=0, size=0, context="", question="", expected=expected
            )

    def __call__(self, run: Run) -> float | None:
        if run.depth or run.finished is None:
            return None
        if self.generated and self.instance.question not in run.question:
            raise ConfigError(
                f"run {run.run_id} ({run.source or 'events'}) did not ask the question of "
                f"{self.task.name} instance seed {self.instance.seed}, size {self.instance.size}"
            )
        if not run.answered:
            return 0.0
        try:
            return float(self.task.score(self.instance, run.answer))
        except (KeyError, IndexError) as exc:
            raise ConfigError(
                f"the scorer of task {self.task.name!r} needs more than the expected answer "
                f"(it asked for {exc}); give --reward-instance SEED:SIZE or --scores"
            ) from None
