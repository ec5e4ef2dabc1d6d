"""What the bash backend reports: a block's error text, the answer ``final``
wrote, and for
``read_state`` the model's shell variables and functions (the listing of
``__polyrlm_state`` minus the names the shell had at start) and the files of
its working directory."""

from __future__ import annotations

import errno
import os
import signal
import stat
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polyrlm.backends.bash.shell import SHELL_STDERR_TAIL_CHARS, RunOutcome
from polyrlm.records import VarInfo
from polyrlm.sandbox import Trip

__all__ = [
    "BASH_ANSWER_MAX_BYTES",
    "STATE_FILES_MAX",
    "AnswerFile",
    "error_text",
    "model_variables",
    "read_answer_file",
    "shell_names",
    "work_files",
]

#: Bytes of the answer file at most; a larger one is refused (the model's error).
BASH_ANSWER_MAX_BYTES = 16 * 1024**2
#: Entries of the working directory listed by ``read_state`` at most.
STATE_FILES_MAX = 200
#: Variables bash itself sets or changes as it runs; not the model's.
_SHELL_OWN = frozenset(
    {"_", "OLDPWD", "PIPESTATUS", "FUNCNAME", "COLUMNS", "LINES", "LINENO", "RANDOM", "SRANDOM"}
)


_LOST = "its variables and functions are lost, the files in the working directory are kept"


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def error_text(
    outcome: RunOutcome, timeout: float, *, sandboxed: bool = False, tripped: Trip | None = None
) -> str | None:
    """The error text of a run, or None when it ended with status 0.
    ``tripped``: why the sandbox's watch killed it, if it did."""
    if tripped is not None:
        lost = "the working directory was emptied" if tripped.kind == "disk" else _LOST
        return (
            f"SandboxLimit: every process of the sandbox was killed because {tripped.why}; "
            f"the shell was restarted: {lost}"
        )
    if outcome.died:
        code = outcome.exit_code
        # bwrap exits with 128 + N when the shell died of signal N.
        killed = code is not None and (code < 0 or code > 128)
        if sandboxed and killed:
            sig = _signal_name(-code if code < 0 else code - 128)  # type: ignore[operator]
            return (
                f"ShellKilled: the shell was killed ({sig}, as by `kill -9 -1`); every process "
                f"of the sandbox was killed with it; the shell was restarted: {_LOST}"
            )
        said = f" (status {code})" if code is not None else ""
        return f"ShellDied: the shell exited{said}; it was restarted: {_LOST}"
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
    status = f"exit status {outcome.status}"
    if outcome.status > 128:  # bash: 128 + N for a command killed by signal N
        status += f" (a command was killed by {_signal_name(outcome.status - 128)})"
        if outcome.status - 128 == signal.SIGXFSZ:
            status += ": it wrote past the sandbox's file size limit"
    return status + (f"; the end of stderr:\n{tail}" if tail else "")


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


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
    ):
        if test(mode):
            return name
    return "special file"


class AnswerFile(BaseModel):
    """What ``final`` left, as the host accepts it: the shell can write
    anything there, so it is checked, never trusted."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    kind: Literal["regular file"] = Field(description="Only a regular file is an answer.")
    size: int = Field(ge=0, le=BASH_ANSWER_MAX_BYTES, description="Its bytes.")
    text: str = Field(description="Its text, decoded as UTF-8 (bad bytes replaced).")


def _read_at_most(fd: int, size: int) -> bytes:
    parts, left = [], size
    while left > 0:
        chunk = os.read(fd, min(left, 1024**2))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_answer_file(path: Path) -> tuple[str | None, str | None]:
    """``(answer, problem)``: the answer file's text, or None when there is
    none; ``problem`` is the model's error when the file is not an answer.
    A symlink there must not make us read a host file, a FIFO block us, nor
    a huge file fill our memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, None
    except OSError as exc:  # a symlink (ELOOP), or worse
        what = "a symlink" if exc.errno == errno.ELOOP else f"unreadable ({exc.strerror})"
        return (
            None,
            f"AnswerError: the answer file is {what}, not a regular file; no answer was set",
        )
    try:
        info = os.fstat(fd)
        regular = stat.S_ISREG(info.st_mode)
        data = _read_at_most(fd, BASH_ANSWER_MAX_BYTES + 1) if regular else b""
    finally:
        os.close(fd)
    try:
        answer = AnswerFile(
            kind=_kind(info.st_mode),  # type: ignore[arg-type]
            size=max(info.st_size, len(data)),
            text=data.decode("utf-8", "replace").rstrip("\n"),
        )
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0])
        why = (
            f"is larger than {BASH_ANSWER_MAX_BYTES:,} bytes (write it to a file and answer "
            "with a summary)"
            if field == "size"
            else f"is a {_kind(info.st_mode)}, not a regular file"
        )
        return None, f"AnswerError: the answer file {why}; no answer was set"
    return answer.text, None
