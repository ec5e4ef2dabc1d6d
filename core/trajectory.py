"""The trajectory file: JSON lines, one event per line, flushed as it happens.

Every line carries ``schema_version``; a killed run leaves a valid prefix.
``RLM(log=path)`` writes one (:class:`TrajectoryWriter`); read it back with
:func:`read_trajectory` (or :func:`load_trajectory` for clear errors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from polyrlm.config import SCHEMA_VERSION
from polyrlm.errors import ConfigError
from polyrlm.events import Event, event_adapter

__all__ = ["TrajectoryWriter", "load_trajectory", "read_trajectory"]


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


def read_trajectory(path: str | Path) -> list[Event]:
    """The events of a JSONL trajectory, validated; a torn last line is skipped."""
    events = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(event_adapter.validate_json(line))
        except ValueError:
            _check_version(line, number)
            if number == len(lines):  # the run was killed mid-write
                break
            raise
    return events


def load_trajectory(path: str | Path) -> list[Event]:
    """:func:`read_trajectory` for commands: an unreadable file, or one that
    is not a trajectory, raises :class:`~polyrlm.errors.ConfigError` saying so."""
    try:
        events = read_trajectory(path)
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
    if not events:
        raise ConfigError(
            f"{str(path)!r} is not a trajectory: it holds no complete event "
            "(write one with `polyrlm run --log FILE` or `RLM(log=FILE)`)"
        )
    return events
