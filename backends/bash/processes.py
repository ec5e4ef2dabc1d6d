"""The processes a shell started, found through ``/proc`` (Linux).

A block's commands are children of the persistent shell, in the shell's
process group; background jobs and orphans (reparented to the sandbox's
init, or still in the group) count too. The shell itself and the
bubblewrap processes above it are kept: stopping a block must not stop the
shell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

__all__ = ["ProcInfo", "descendants", "find_shell", "kill_and_wait", "members", "send", "snapshot"]

_PROC = Path("/proc")

#: pid -> (parent pid, process group id) of every live (non-zombie) process.
ProcInfo = dict[int, tuple[int, int]]


def snapshot() -> ProcInfo:
    """Every live process's parent and process group, read from /proc."""
    out: ProcInfo = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone since the listing
            continue
        # The command name (field 2) may hold spaces and parentheses: split after it.
        fields = text.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):  # a zombie cannot be signalled; its parent reaps it
            continue
        out[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return out


def descendants(root: int, procs: ProcInfo) -> set[int]:
    """Children of ``root``, their children, and so on (``root`` excluded)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def members(root: int, group: int, keep: Iterable[int]) -> set[int]:
    """Processes under ``root`` or in process group ``group``, minus ``keep``."""
    procs = snapshot()
    found = descendants(root, procs) | {pid for pid, (_, pg) in procs.items() if pg == group}
    return found - set(keep)


def _comm(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def find_shell(root: int, launcher: str) -> tuple[int, set[int]]:
    """The first process under ``root`` (itself included) that is not the
    ``launcher`` (e.g. ``bwrap``), and that process's ancestors up to ``root``."""
    procs = snapshot()
    chain = [root]
    while chain:
        pid = chain[-1]
        if _comm(pid) != launcher:
            return pid, set(chain[:-1])
        kids = sorted(p for p, (ppid, _) in procs.items() if ppid == pid)
        if not kids:
            break
        chain.append(kids[0])
    raise ProcessLookupError(f"no process under pid {root} besides {launcher}")


def send(pids: Iterable[int], sig: signal.Signals) -> None:
    """Signal each process; those already gone are skipped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _running(pid: int) -> bool:
    try:
        state = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def kill_and_wait(pids: Iterable[int], timeout_s: float, poll_s: float = 0.005) -> set[int]:
    """SIGKILL each process and wait (up to ``timeout_s``) until none runs;
    returns those still running."""
    left = set(pids)
    send(left, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while left:
        left = {pid for pid in left if _running(pid)}
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    return left
