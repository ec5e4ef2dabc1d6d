"""The directories a client may name files in (``polyrlm mcp --root DIR``),
and the check every ``context_path`` passes before anything reads it.

A path is resolved first (``~``, ``..`` and every symlink, the final one
included) and must then lie in one of the roots, themselves resolved at
start-up. A directory is walked too: a symlink anywhere in it that resolves
outside the roots refuses the whole directory (the backends read a
directory's files through their links, and ``bash`` shows the whole tree).
The check is made when the call arrives; the resolved path is what the run
reads, so a link swapped afterwards is not followed, but a directory's
contents changed mid-run are not re-checked.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

from polyrlm.errors import ConfigError

__all__ = ["DIRECTORY_CHECK_MAX_ENTRIES", "PathRefused", "Roots"]

#: Entries (files, folders, links, at any depth) a directory context may hold;
#: a bigger tree is refused rather than walked without end.
DIRECTORY_CHECK_MAX_ENTRIES = 100_000

#: Characters that make a path a pattern for the sql backend (it would expand it).
_PATTERN_CHARS = frozenset("*?[")


class PathRefused(ConfigError):
    """A ``context_path`` outside the roots, or one that cannot be used."""


class Roots:
    """The allowed roots, resolved; the first is where relative paths start."""

    def __init__(self, folders: Sequence[Path]) -> None:
        resolved: list[Path] = []
        for folder in folders:
            try:
                real = folder.expanduser().resolve(strict=True)
            except (OSError, RuntimeError) as exc:
                raise ConfigError(f"bad --root {str(folder)!r}: {_why(exc)}") from None
            if not real.is_dir():
                raise ConfigError(f"bad --root {str(folder)!r}: not a directory")
            resolved.append(real)
        if not resolved:
            raise ConfigError("no --root: name at least one directory")
        self.folders = tuple(dict.fromkeys(resolved))

    def __repr__(self) -> str:
        return f"Roots({', '.join(map(str, self.folders))})"

    def contains(self, path: Path) -> bool:
        """``path`` (resolved) is a root or lies in one."""
        return any(path == root or root in path.parents for root in self.folders)

    def _refuse(self, spec: str, why: str) -> PathRefused:
        listed = ", ".join(str(root) for root in self.folders)
        return PathRefused(f"context_path {spec!r} {why} (allowed roots: {listed})")

    def confine(self, spec: str) -> Path:
        """The file or directory ``spec`` names, resolved, once it is known
        to lie in the roots (and, for a directory, everything it links to);
        raises :class:`PathRefused` otherwise, having read nothing outside."""
        if not spec or not spec.strip():
            raise self._refuse(spec, "is empty")
        if "\0" in spec:
            raise self._refuse(spec, "holds a NUL character")
        given = Path(spec).expanduser()
        candidate = given if given.is_absolute() else self.folders[0] / given
        try:
            # Not strict yet: where it would lead decides, before whether it exists.
            lead = candidate.resolve()
        except (OSError, RuntimeError) as exc:
            raise self._refuse(spec, f"cannot be resolved: {_why(exc)}") from None
        if not self.contains(lead):
            raise self._refuse(spec, "is outside the allowed roots")
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise self._refuse(spec, f"cannot be read: {_why(exc)}") from None
        if not self.contains(real):  # changed under us between the two looks
            raise self._refuse(spec, "is outside the allowed roots")
        if _PATTERN_CHARS & set(str(real)):
            raise self._refuse(spec, "has a pattern character (* ? [) in its path")
        if real.is_dir():
            self._check_tree(real, spec)
        return real

    def _check_tree(self, top: Path, spec: str) -> None:
        """Every symlink under ``top`` resolves inside the roots (checked in
        name order, folder by folder, so the same tree fails the same way)."""
        seen = 0
        pending = [top]
        while pending:
            folder = pending.pop()
            try:
                with os.scandir(folder) as listing:
                    room = DIRECTORY_CHECK_MAX_ENTRIES - seen + 1
                    entries = sorted(itertools.islice(listing, room), key=lambda e: e.name)
            except OSError as exc:
                inner = str(folder.relative_to(top))
                raise self._refuse(spec, f"cannot be listed at {inner!r}: {_why(exc)}") from None
            seen += len(entries)
            if seen > DIRECTORY_CHECK_MAX_ENTRIES:
                raise self._refuse(
                    spec,
                    f"holds more than {DIRECTORY_CHECK_MAX_ENTRIES:,} entries: "
                    "name a smaller directory",
                )
            folders = []
            for entry in entries:
                if entry.is_symlink():
                    self._check_link(Path(entry.path), top, spec)
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
            pending.extend(reversed(folders))

    def _check_link(self, link: Path, top: Path, spec: str) -> None:
        inner = str(link.relative_to(top))
        try:
            target = link.resolve()
        except (OSError, RuntimeError) as exc:
            raise self._refuse(
                spec, f"holds {inner!r}, a link that cannot be resolved: {_why(exc)}"
            ) from None
        if not self.contains(target):
            raise self._refuse(
                spec, f"holds {inner!r}, a link that leads outside the allowed roots"
            )


def _why(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file or directory"
    if isinstance(exc, RuntimeError):  # a symlink loop, on Python < 3.13
        return "a symlink loop"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)
