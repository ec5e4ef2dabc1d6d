"""What the bash backend reports: a block's error text, the answer ``final``
wrote, and for
``read_state`` the model's shell variables and functions (the listing of
``__polyrlm_state`` minus the names the shell had at start) and the files of
its working directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from polyrlm.backends.bash.shell import SHELL_STDERR_TAIL_CHARS, RunOutcome
from polyrlm.records import VarInfo

__all__ = [
    "STATE_FILES_MAX",
    "error_text",
    "model_variables",
    "read_answer_file",
    "shell_names",
    "work_files",
]

#: Entries of the working directory listed by ``read_state`` at most.
STATE_FILES_MAX = 200
#: Variables bash itself sets or changes as it runs; not the model's.
_SHELL_OWN = frozenset(
    {"_", "OLDPWD", "PIPESTATUS", "FUNCNAME", "COLUMNS", "LINES", "LINENO", "RANDOM", "SRANDOM"}
)


def error_text(outcome: RunOutcome, timeout: float) -> str | None:
    """The error text of a run, or None when it ended with status 0."""
    if outcome.died:
        code = f" (status {outcome.exit_code})" if outcome.exit_code is not None else ""
        return (
            f"ShellDied: the shell exited{code}; it was restarted: its variables and functions "
            "are lost, the files in the working directory are kept"
        )
    if outcome.stuck:
        return (
            f"TimeoutError: the block ran longer than {timeout:g} s and did not stop when "
            "interrupted; the shell was restarted: its variables and functions are lost, the "
            "files in the working directory are kept"
        )
    if outcome.timed_out:
        return (
            f"TimeoutError: the block ran longer than {timeout:g} s; it was interrupted and the "
            "processes it started were stopped; variables, functions and files are kept"
        )
    if not outcome.status:
        return None
    tail = outcome.stderr_tail
    if len(tail) >= SHELL_STDERR_TAIL_CHARS and "\n" in tail:  # cut at a line start
        tail = tail.split("\n", 1)[1]
    tail = tail.strip()
    return f"exit status {outcome.status}" + (f"; the end of stderr:\n{tail}" if tail else "")


def _rows(listing: str) -> list[list[str]]:
    return [line.split("\t") for line in listing.splitlines() if "\t" in line]


def shell_names(listing: str) -> set[str]:
    """Every name in a ``__polyrlm_state`` listing (the baseline at start)."""
    return {fields[1] for fields in _rows(listing)}


def model_variables(listing: str, baseline: set[str]) -> list[VarInfo]:
    """The variables and functions in a ``__polyrlm_state`` listing that the
    model made: not in ``baseline``, not the shell's own."""
    found = []
    for fields in _rows(listing):
        name = fields[1]
        if name in baseline or name in _SHELL_OWN or name.startswith("BASH_"):
            continue
        found.append(_var_info(fields))
    return found


def _var_info(fields: list[str]) -> VarInfo:
    if fields[0] == "f" or len(fields) < 4:
        return VarInfo(name=fields[1], type="function")
    attrs, size = fields[2], fields[3]
    if "A" in attrs:
        kind = "associative array"
    elif "a" in attrs:
        kind = "array"
    elif "i" in attrs:
        kind = "integer"
    else:
        kind = "string"
    if "x" in attrs:
        kind += ", exported"
    return VarInfo(name=fields[1], type=kind, size=int(size) if size.isdigit() else None)


def work_files(work: Path) -> list[VarInfo]:
    """The working directory's entries (``./name``): files with their bytes,
    folders with their entry counts."""
    out = []
    try:
        entries = sorted(os.scandir(work), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries[:STATE_FILES_MAX]:
        try:
            if entry.is_symlink():
                out.append(VarInfo(name=f"./{entry.name}", type="symlink"))
            elif entry.is_dir():
                count = sum(1 for _ in os.scandir(entry.path))
                out.append(VarInfo(name=f"./{entry.name}", type="directory", size=count))
            else:
                size = entry.stat().st_size
                out.append(VarInfo(name=f"./{entry.name}", type="file", size=size))
        except OSError:
            continue
    return out


def read_answer_file(path: Path, max_bytes: int) -> str | None:
    """The answer file's text (cut at ``max_bytes``, with a note), or None.
    The sandbox can write that folder: a symlink there must not make us read
    a host file, nor a FIFO block us."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # none yet, or a symlink
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = fh.read(max_bytes + 1)
    note = ""
    if len(data) > max_bytes:
        data, note = data[:max_bytes], f"\n[answer cut at {max_bytes} bytes]"
    return data.decode("utf-8", "replace").rstrip("\n") + note
