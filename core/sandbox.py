"""Bubblewrap and resource limits for out-of-process environments.

The ``python`` (Jupyter kernel) and ``bash`` backends run their process in
a sandbox built here (:class:`Bwrap`): its own user, pid, mount, ipc, uts,
cgroup and network namespaces; no capabilities; uid and gid
:data:`SANDBOX_UID` inside; a fresh ``/proc``, a minimal ``/dev``; the
system folders read-only, with what other users may not read in ``/etc``
masked; the host's interpreter read-only (at :data:`GUEST_PYTHON` when it
lives in a home folder); nothing else of the host but what the backend binds.

Caps: RLIMIT_AS per process, RLIMIT_FSIZE, no core files, size-capped tmpfs,
and the host's watch past the process and disk caps
(:mod:`polyrlm.sandbox_watch`, whose names are re-exported here). Every
process an environment starts lives in the sandbox's pid namespace, tied by
``--die-with-parent`` and PR_SET_PDEATHSIG to the host thread that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import resource
import shutil
import signal
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, overload

from pydantic import Field

from polyrlm.environment import EnvConfig
from polyrlm.errors import ConfigError
from polyrlm.sandbox_watch import (
    SANDBOX_DISK_CHECK_S,
    SANDBOX_DISK_LIMIT_BYTES,
    SANDBOX_DISK_MAX_ENTRIES,
    SANDBOX_NICE,
    SANDBOX_WATCH_INTERVAL_S,
    ProcInfo,
    SandboxWatch,
    Trip,
    deprioritize,
    descendants,
    find_payload,
    kill_and_wait,
    send,
    snapshot,
)

__all__ = [
    "GUEST_PYTHON",
    "GUEST_ROOT",
    "HOME_ROOTS",
    "SANDBOX_DISK_CHECK_S",
    "SANDBOX_DISK_LIMIT_BYTES",
    "SANDBOX_DISK_MAX_ENTRIES",
    "SANDBOX_GID",
    "SANDBOX_MEMORY_LIMIT_BYTES",
    "SANDBOX_NICE",
    "SANDBOX_PATH",
    "SANDBOX_PROCESS_LIMIT",
    "SANDBOX_SYSTEM_PATHS",
    "SANDBOX_UID",
    "SANDBOX_WATCH_INTERVAL_S",
    "Bwrap",
    "ProcInfo",
    "PythonLayout",
    "SandboxConfig",
    "SandboxFlag",
    "SandboxWatch",
    "Trip",
    "bwrap_path",
    "choose_sandbox",
    "deprioritize",
    "descendants",
    "find_payload",
    "host_python",
    "kill_and_wait",
    "preexec_limits",
    "sandbox_python",
    "send",
    "snapshot",
]

#: User and group id of the sandbox's processes inside their namespace.
SANDBOX_UID = 1000
SANDBOX_GID = 1000
#: System folders the sandbox sees read-only, where they exist (a symlink,
#: such as ``/bin -> usr/bin``, is recreated as the same symlink).
SANDBOX_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
#: Folders walked once per process: what others may not read there is masked.
_MASKED_ROOTS = ("/etc",)
#: Host home folders: never shown; an interpreter inside one is bound elsewhere.
HOME_ROOTS = ("/root", "/home")
#: Where the sandbox sees the environment's own folders.
GUEST_ROOT = "/rlm"
#: Where the sandbox sees the host's interpreter when it lives in a home folder.
GUEST_PYTHON = f"{GUEST_ROOT}/python"
_GUEST_VENV = f"{GUEST_ROOT}/venv"
#: PATH inside the sandbox.
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
#: Address space of each process in the sandbox, in bytes (RLIMIT_AS).
SANDBOX_MEMORY_LIMIT_BYTES = 8 * 1024**3
#: Processes and threads alive at once in one sandbox; past it, it is killed.
SANDBOX_PROCESS_LIMIT = 256

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded here: a forked child must not load it
_log = logging.getLogger(__name__)
_warned: set[str] = set()


class SandboxConfig(EnvConfig):
    """Options of a backend that runs in a bubblewrap sandbox."""

    sandbox: bool | None = Field(
        None,
        description="Run under bubblewrap: True requires it, False never, "
        "None when it is installed.",
    )
    memory_limit_bytes: int | None = Field(
        SANDBOX_MEMORY_LIMIT_BYTES, ge=2**28, description="RLIMIT_AS of each process."
    )
    process_limit: int = Field(
        SANDBOX_PROCESS_LIMIT, ge=16, description="Processes and threads in the sandbox at once."
    )
    disk_limit_bytes: int = Field(
        SANDBOX_DISK_LIMIT_BYTES,
        ge=2**20,
        description="Bytes of each private tmpfs, of one file, and of the writable folders.",
    )


def bwrap_path() -> str | None:
    """The bubblewrap executable, if installed."""
    return shutil.which("bwrap")


def choose_sandbox(wanted: bool | None, backend: str) -> tuple[str | None, bool]:
    """bwrap's path and whether to sandbox, for ``Config.sandbox=wanted``:
    True requires bwrap, False never sandboxes, None sandboxes when bwrap
    is installed and warns (once per backend) when it is not."""
    bwrap = bwrap_path()
    if wanted and bwrap is None:
        raise ConfigError(
            f"the {backend} backend's sandbox needs bubblewrap (bwrap), which is not installed: "
            "apt-get install bubblewrap, or pass sandbox=False to run unsandboxed"
        )
    if wanted is None and bwrap is None and backend not in _warned:
        _warned.add(backend)
        _log.warning(
            "polyrlm %s backend: bubblewrap (bwrap) is not installed, so its code is NOT "
            "sandboxed: it runs as this user, with this machine's files and network. Install "
            "it (Debian: apt-get install bubblewrap), or pass sandbox=False to choose this "
            "knowingly.",
            backend,
        )
    return bwrap, bwrap is not None if wanted is None else wanted


class _Sandboxed(Protocol):
    @property
    def is_sandboxed(self) -> bool: ...


class SandboxFlag:
    """``sandboxed``: on the class, whether the default configuration is
    sandboxed here (bwrap installed); on an environment, whether it is."""

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> bool: ...
    @overload
    def __get__(self, obj: _Sandboxed, owner: type[Any]) -> bool: ...
    def __get__(self, obj: _Sandboxed | None, owner: type[Any]) -> bool:
        return bwrap_path() is not None if obj is None else obj.is_sandboxed


def preexec_limits(memory_bytes: int | None, file_bytes: int | None) -> Callable[[], None]:
    """What a child runs before it execs the sandbox (or the unsandboxed
    process): the rlimits, and death when the thread that started it ends."""

    def apply() -> None:
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        if file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a core file is the host's disk
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return apply


# -- the host's interpreter, inside --


@dataclass(frozen=True)
class PythonLayout:
    """The host's interpreter as a sandbox sees it."""

    #: The interpreter with the host environment's site-packages.
    executable: str
    #: The base interpreter (run with ``-I -S``: standard library only).
    base: str
    #: Variables it needs there (the shared library path, when it moved).
    env: Mapping[str, str] = field(default_factory=dict)
    #: ``(host path, guest path)`` bound read-only.
    binds: tuple[tuple[str, str], ...] = ()
    #: pyvenv.cfg of a virtual environment rebuilt at its guest place.
    venv_cfg: str | None = None


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _homes() -> tuple[str, ...]:
    home = os.path.realpath(os.path.expanduser("~"))
    return (*HOME_ROOTS, home) if home != "/" else HOME_ROOTS


def host_python() -> PythonLayout:
    """The interpreter at its host paths (an unsandboxed environment)."""
    return PythonLayout(sys.executable, os.path.realpath(sys.executable))


@functools.cache
def sandbox_python() -> PythonLayout:
    """Where a sandbox sees this interpreter: at its host paths, or, when its
    prefix or its virtual environment lives in a home folder, at
    :data:`GUEST_PYTHON` (the venv rebuilt beside it, its ``lib`` bound)."""
    base = os.path.realpath(sys.base_prefix)
    venv = os.path.realpath(sys.prefix) if sys.prefix != sys.base_prefix else None
    real = os.path.realpath(sys.executable)
    homes = _homes()
    if not _under(base, homes) and not (venv and _under(venv, homes)):
        binds = tuple((p, p) for p in (base, venv) if p and not _under(p, SANDBOX_SYSTEM_PATHS))
        return PythonLayout(sys.executable, real, binds=binds)
    guest_base = f"{GUEST_PYTHON}/{os.path.relpath(real, base)}"
    env = {"LD_LIBRARY_PATH": f"{GUEST_PYTHON}/lib"}  # its RUNPATH names the host prefix
    if venv is None:
        return PythonLayout(guest_base, guest_base, env, ((base, GUEST_PYTHON),))
    cfg = Path(venv, "pyvenv.cfg")
    system = "false"
    with contextlib.suppress(OSError):
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "include-system-site-packages":
                system = value.strip()
    text = (
        f"home = {os.path.dirname(guest_base)}\ninclude-system-site-packages = {system}\n"
        f"version = {'.'.join(map(str, sys.version_info[:3]))}\n"
    )
    binds = ((base, GUEST_PYTHON), (f"{venv}/lib", f"{_GUEST_VENV}/lib"))
    return PythonLayout(f"{_GUEST_VENV}/bin/python3", guest_base, env, binds, text)


@functools.cache
def _unreadable(roots: tuple[str, ...]) -> tuple[tuple[str, bool], ...]:
    """Entries under ``roots`` that other users may not read: (path, is a folder)."""
    found: list[tuple[str, bool]] = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            hidden = set()
            for name in (*dirs, *files):
                path = os.path.join(folder, name)
                try:
                    mode = os.lstat(path).st_mode
                except OSError:
                    continue
                is_dir = stat.S_ISDIR(mode)
                need = stat.S_IROTH | (stat.S_IXOTH if is_dir else 0)
                if not stat.S_ISLNK(mode) and mode & need != need:
                    found.append((path, is_dir))
                    hidden.add(name)
            dirs[:] = [d for d in dirs if d not in hidden]
    return tuple(found)


class Bwrap:
    """One sandbox's bubblewrap command line: the common part first, then
    the backend's own folders (:meth:`bind`, :meth:`tmpfs`, ...), then
    :meth:`command`. ``private`` is a host folder of the environment's own
    for the masks and a rebuilt pyvenv.cfg."""

    def __init__(self, bwrap: str, private: Path) -> None:
        ids = ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID)]
        self.argv = [bwrap, "--unshare-all", "--unshare-user", *ids, "--hostname", "sandbox"]
        self.argv += ["--die-with-parent", "--cap-drop", "ALL"]
        for path in SANDBOX_SYSTEM_PATHS:
            if os.path.islink(path):
                self.argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                self.ro_bind(path, path)
        # Mode 000, owned by the host's user: unreadable inside, even though
        # the sandbox's user maps to that user (it has no capabilities).
        mask_file, mask_dir = private / "masked", private / "masked.d"
        mask_file.touch(mode=0)
        mask_dir.mkdir(mode=0, exist_ok=True)
        for path, is_dir in _unreadable(_MASKED_ROOTS):
            self.ro_bind(mask_dir if is_dir else mask_file, path)
        self.python = sandbox_python()
        for source, target in self.python.binds:
            self.ro_bind(source, target)
        if self.python.venv_cfg is not None:
            cfg = private / "pyvenv.cfg"
            cfg.write_text(self.python.venv_cfg)
            self.ro_bind(cfg, f"{_GUEST_VENV}/pyvenv.cfg")
            self.argv += ["--dir", f"{_GUEST_VENV}/bin"]
            self.argv += ["--symlink", self.python.base, f"{_GUEST_VENV}/bin/python3"]
        self.argv += ["--proc", "/proc", "--dev", "/dev"]

    def ro_bind(self, source: str | Path, target: str) -> None:
        self.argv += ["--ro-bind", str(source), target]

    def bind(self, source: str | Path, target: str) -> None:
        self.argv += ["--bind", str(source), target]

    def tmpfs(self, target: str, size_bytes: int) -> None:
        """A private writable folder in memory, at most ``size_bytes``."""
        self.argv += ["--size", str(size_bytes), "--tmpfs", target]

    def command(self, chdir: str, argv: Sequence[str], unset: Sequence[str] = ()) -> list[str]:
        """The whole command line, running ``argv`` in ``chdir``; ``unset``:
        variables the launcher adds that must not reach the sandbox."""
        # Last: everything above is mounted; now nothing else can be written.
        tail = ["--remount-ro", "/dev", "--remount-ro", "/proc", "--remount-ro", "/"]
        for name in unset:
            tail += ["--unsetenv", name]
        return [*self.argv, *tail, "--chdir", chdir, "--", *argv]
