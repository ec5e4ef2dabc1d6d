"""The trajectory file: JSON lines, one event per line, flushed as it happens.

Every line carries ``schema_version``; a killed run leaves a valid prefix
(and perhaps a half-written last line, which readers ignore and report).
``RLM(log=path)`` writes one (:class:`TrajectoryWriter`); read it back with
:func:`read_trajectory` (or :func:`load_trajectory` for clear errors, and
:func:`load_trajectory_file` to learn whether the record ends early).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from polyrlm.config import SCHEMA_VERSION
from polyrlm.errors import ConfigError
from polyrlm.events import Event, RunFinished, RunStarted, event_adapter

__all__ = [
    "RecordedTrajectory",
    "TrajectoryWriter",
    "ends_early",
    "load_trajectory",
    "load_trajectory_file",
    "read_trajectory",
    "record_notes",
]


class TrajectoryWriter:
    """Writes every event it is given to ``path`` (truncating the file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = self.path.open("w", encoding="utf-8")

    def on_event(self, event: Event) -> None:
        if self._fh is None:
            return
        self._fh.write(event.model_dump_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _check_version(line: str, number: int) -> None:
    """A line a newer polyrlm wrote (new event kinds) says so, plainly."""
    try:
        version = json.loads(line).get("schema_version", 0)
    except (ValueError, AttributeError):
        return
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise ValueError(
            f"line {number} has schema_version {version}; this polyrlm reads up to "
            f"{SCHEMA_VERSION}: upgrade polyrlm"
        )


@dataclass(frozen=True)
class RecordedTrajectory:
    """A trajectory file as read back: its events, and how its record ends."""

    events: list[Event]
    #: Line of the last event read (1-based; 0 when there is none).
    last_line: int = 0
    #: A last line that is not a whole event (a writer killed mid-line): ignored.
    incomplete_line: int | None = None

    @property
    def ended_early(self) -> bool:
        """The root run has no ``run_finished``: the run did not finish."""
        return ends_early(self.events)

    def notes(self) -> list[str]:
        """What to tell a reader about how this record ends (:func:`record_notes`)."""
        return record_notes(
            self.events, last_line=self.last_line, incomplete_line=self.incomplete_line
        )


def ends_early(events: Sequence[Event]) -> bool:
    """The events hold a root ``run_started`` but not its ``run_finished``
    (a killed run, or one still running)."""
    roots = {e.run_id for e in events if isinstance(e, RunStarted) and e.depth == 0}
    finished = {e.run_id for e in events if isinstance(e, RunFinished)}
    return bool(roots - finished)


def record_notes(
    events: Sequence[Event], *, last_line: int | None = None, incomplete_line: int | None = None
) -> list[str]:
    """Plain sentences on how a record ends, when not at its root's
    ``run_finished``: "the record ends at line N (the run did not finish)",
    "line N is incomplete; ignored". ``last_line`` defaults to the number of
    events (a file's line numbers, when it has no blank lines)."""
    notes = []
    if ends_early(events):
        end = len(events) if last_line is None else last_line
        notes.append(f"the record ends at line {end} (the run did not finish)")
    if incomplete_line is not None:
        notes.append(f"line {incomplete_line} is incomplete; ignored")
    return notes


def _read(path: Path) -> RecordedTrajectory:
    if path.exists() and not (path.is_file() or path.is_dir()):
        # A FIFO or a device may never end: refused before opening.
        raise ValueError("it is not a regular file")
    lines = path.read_bytes().split(b"\n")  # only \n ends a line: JSON keeps U+2028 raw
    if lines and not lines[-1]:
        lines.pop()  # the file ends with a newline
    events: list[Event] = []
    last, incomplete = 0, None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(event_adapter.validate_json(line.decode("utf-8")))
        except ValueError:  # UnicodeDecodeError and ValidationError too
            _check_version(line.decode("utf-8", "replace"), number)
            if number == len(lines):  # the run was killed mid-write
                incomplete = number
                break
            raise
        last = number
    return RecordedTrajectory(events, last, incomplete)


def read_trajectory(path: str | Path) -> list[Event]:
    """The events of a JSONL trajectory, validated; a torn last line is skipped."""
    return _read(Path(path)).events


def load_trajectory_file(path: str | Path) -> RecordedTrajectory:
    """The trajectory at ``path`` with how it ends, for commands: an
    unreadable file, or one that is not a trajectory, raises
    :class:`~polyrlm.errors.ConfigError` saying so."""
    try:
        record = _read(Path(path))
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{str(path)!r} is not a trajectory: not UTF-8 text") from exc
    except ValidationError as exc:  # a line that is not an event
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        detail = f"{where}: {first['msg']}" if where else first["msg"]
        raise ConfigError(f"{str(path)!r} is not a trajectory: {detail}") from exc
    except ValueError as exc:
        raise ConfigError(f"cannot read trajectory {str(path)!r}: {exc}") from exc
    if not record.events:
        raise ConfigError(
            f"{str(path)!r} is not a trajectory: it holds no complete event "
            "(write one with `polyrlm run --log FILE` or `RLM(log=FILE)`)"
        )
    return record


def load_trajectory(path: str | Path) -> list[Event]:
    """:func:`load_trajectory_file`'s events."""
    return load_trajectory_file(path).events
