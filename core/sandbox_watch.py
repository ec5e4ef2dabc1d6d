"""The host side of a sandbox: its processes, found through /proc, and the
watch that holds it to its process and disk caps.

:class:`SandboxWatch` is a host thread that kills a sandbox's whole pid
namespace past its process or disk cap (RLIMIT_NPROC cannot: the sandbox's
user is the host's, and root is exempt from it; cgroups are not writable
everywhere). The /proc helpers both sandboxed backends use to find and stop
processes are here too (:mod:`polyrlm.sandbox` builds the sandbox itself).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SANDBOX_DISK_CHECK_S",
    "SANDBOX_DISK_LIMIT_BYTES",
    "SANDBOX_DISK_MAX_ENTRIES",
    "SANDBOX_NICE",
    "SANDBOX_WATCH_INTERVAL_S",
    "ProcInfo",
    "SandboxWatch",
    "Trip",
    "deprioritize",
    "descendants",
    "find_payload",
    "kill_and_wait",
    "send",
    "snapshot",
]

#: Seconds between two counts of a sandbox's processes: a fork bomb grows
#: by hundreds of processes in this time, far below the host's pid limit.
SANDBOX_WATCH_INTERVAL_S = 0.02
#: Niceness of the sandbox's payload (the shell, the kernel) and all it
#: starts; bubblewrap's init keeps the host's. A fork bomb's thousands of
#: runnable processes would otherwise starve the host's watch, and the init
#: once killed, which must run to end its namespace (measured on two cores:
#: 0.8 s to 40 s to end it at equal niceness, and once the host's pid space
#: exhausted at niceness 10).
SANDBOX_NICE = 10
#: Polls between two counts of threads (one read per process, slow under a
#: fork bomb); the polls between count processes only (one listing).
SANDBOX_THREAD_POLLS = 10
#: Seconds between two sums of the host-backed writable folders' bytes.
SANDBOX_DISK_CHECK_S = 0.5
#: Bytes of each private tmpfs, of one file (RLIMIT_FSIZE), and of the
#: host-backed writable folders together.
SANDBOX_DISK_LIMIT_BYTES = 1024**3
#: Entries of the host-backed writable folders at most (files use inodes too).
SANDBOX_DISK_MAX_ENTRIES = 100_000
_PROC = Path("/proc")


# -- processes, through /proc --

#: pid -> (parent pid, process group id) of every live (non-zombie) process.
ProcInfo = dict[int, tuple[int, int]]


def _stat_fields(path: Path) -> list[str] | None:
    """Fields 3 on of /proc/PID/stat; None when it is gone (or going: an
    exiting process's file may read empty)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    _, paren, rest = text.rpartition(")")
    fields = rest.split()
    return fields if paren and len(fields) >= 18 else None


def snapshot() -> ProcInfo:
    """Every live process's parent and process group, read from /proc."""
    out: ProcInfo = {}
    for entry in _PROC.iterdir():
        fields = _stat_fields(entry / "stat") if entry.name.isdigit() else None
        if fields and fields[0] not in ("Z", "X"):  # a zombie cannot be signalled
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


def find_payload(root: int, launcher: str) -> tuple[int, set[int]]:
    """The first process under ``root`` (itself included) that is not the
    ``launcher`` (``bwrap``), and that process's ancestors up to ``root``."""
    procs = snapshot()
    chain = [root]
    while chain:
        pid = chain[-1]
        try:
            comm = (_PROC / str(pid) / "comm").read_text().strip()
        except OSError:
            comm = ""
        if comm != launcher:
            return pid, set(chain[:-1])
        kids = sorted(p for p, (ppid, _) in procs.items() if ppid == pid)
        if not kids:
            break
        chain.append(kids[0])
    raise ProcessLookupError(f"no process under pid {root} besides {launcher}")


def deprioritize(pid: int) -> None:
    """Give ``pid`` (a sandbox's payload) the niceness :data:`SANDBOX_NICE`;
    what it starts inherits it."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, SANDBOX_NICE)


def send(pids: Iterable[int], sig: signal.Signals) -> None:
    """Signal each process; those already gone are skipped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _running(pid: int) -> bool:
    fields = _stat_fields(_PROC / str(pid) / "stat")
    if fields is None:  # unreadable for a moment (exiting): there until its folder goes
        return (_PROC / str(pid)).exists()
    return fields[0] not in ("Z", "X")


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


@dataclass(frozen=True)
class Trip:
    """Why a :class:`SandboxWatch` killed its sandbox."""

    #: ``"processes"``, ``"disk"`` or ``"watch"`` (the watch itself failed).
    kind: str
    #: For the model: "it ran more than ...".
    why: str


class SandboxWatch:
    """Kills a sandbox whose processes and threads pass ``process_limit``,
    or whose host-backed writable folders (``disk``) pass
    ``disk_limit_bytes`` or :data:`SANDBOX_DISK_MAX_ENTRIES` entries.

    ``launcher`` is the bwrap process the host started; its child is the
    sandbox's init (pid 1 of its namespace): killing it kills every process
    in the namespace at once, however fast they fork. The count reads the
    sandbox's own ``/proc`` (through the init's root), a handful of entries.
    :attr:`tripped` says why it killed the sandbox, if it did.
    """

    def __init__(
        self,
        launcher: int,
        *,
        process_limit: int,
        disk: Sequence[Path] = (),
        disk_limit_bytes: int = SANDBOX_DISK_LIMIT_BYTES,
    ) -> None:
        self.launcher = launcher
        self.tripped: Trip | None = None
        #: The most processes and threads counted at once.
        self.peak = 0
        self._limit, self._disk, self._disk_limit = process_limit, tuple(disk), disk_limit_bytes
        self._init: int | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="polyrlm-sandbox-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._watch()
        except Exception as exc:  # fail closed: a sandbox nobody watches is stopped
            self._trip("watch", f"its watch failed ({type(exc).__name__}: {exc})")

    def _watch(self) -> None:
        with contextlib.suppress(OSError):  # root only: the watch runs first, always
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        next_disk = time.monotonic() + SANDBOX_DISK_CHECK_S
        polls = 0
        while not self._stopped.wait(SANDBOX_WATCH_INTERVAL_S):
            if not _running(self.launcher):
                return
            if self._init is None:
                kids = [p for p, (pp, _) in snapshot().items() if pp == self.launcher]
                self._init = kids[0] if kids else None
                continue
            polls += 1
            tasks = self._tasks(self._init, threads=polls % SANDBOX_THREAD_POLLS == 0)
            self.peak = max(self.peak, tasks)
            if tasks > self._limit:
                self._trip("processes", f"it ran more than {self._limit:,} processes and threads")
            elif self._disk and time.monotonic() >= next_disk:
                used, entries = _usage(self._disk, SANDBOX_DISK_MAX_ENTRIES)
                if used > self._disk_limit or entries > SANDBOX_DISK_MAX_ENTRIES:
                    self._trip(
                        "disk",
                        f"its writable folders passed {self._disk_limit:,} bytes or "
                        f"{SANDBOX_DISK_MAX_ENTRIES:,} entries",
                    )
                next_disk = time.monotonic() + SANDBOX_DISK_CHECK_S

    def _tasks(self, init: int, *, threads: bool) -> int:
        proc = _PROC / str(init) / "root" / "proc"
        try:
            pids = [e for e in os.listdir(proc) if e.isdigit()]
        except OSError:  # that /proc is out of reach: count the tree from the host
            return len(descendants(self.launcher, snapshot()))
        if not threads or len(pids) > self._limit:  # no need to read each one
            return len(pids)
        total = 0
        for pid in pids:
            fields = _stat_fields(proc / pid / "stat")
            total += int(fields[17]) if fields else 0  # field 20: num_threads
        return total

    def _trip(self, kind: str, why: str) -> None:
        if self.tripped is None:
            self.tripped = Trip(kind, why)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the sandbox's init (so every process in it) and the launcher."""
        send([p for p in (self._init, self.launcher) if p is not None], signal.SIGKILL)

    def stop(self) -> None:
        """Stop watching (the sandbox is gone or going)."""
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join(1.0)


def _usage(folders: Sequence[Path], max_entries: int) -> tuple[int, int]:
    """Bytes on disk (allocated blocks: a sparse file costs what it holds) and
    entries under ``folders``; stops counting past ``max_entries``."""
    used = entries = 0
    todo = [str(f) for f in folders]
    while todo and entries <= max_entries:
        try:
            with os.scandir(todo.pop()) as listing:
                for entry in listing:
                    entries += 1
                    with contextlib.suppress(OSError):
                        info = entry.stat(follow_symlinks=False)
                        used += info.st_blocks * 512
                        if stat.S_ISDIR(info.st_mode):
                            todo.append(entry.path)
        except OSError:
            continue
    return used, entries
