"""Whether the shell is sandboxed, where it sees its folders, and the
bubblewrap command that builds its sandbox.

Sandboxed (``bwrap``), the shell gets: the system folders read-only
(:data:`SANDBOX_SYSTEM_PATHS`, and the host interpreter's prefix for the
bridge client), fresh ``/proc`` and ``/dev`` (both read-only), no network, no
other process visible (its own pid namespace), no capabilities, and under
:data:`GUEST_ROOT` its working directory (writable), the context
(read-only), its commands, the control folder and the bridge socket
(read-only), and the answer folder (writable, for ``final``). ``/tmp`` is a
private writable folder of the environment's own. Nothing else of the host
is there: not its home folders, not its ``/tmp``, not ``/run``.

Unsandboxed, the same folders are used at their host paths.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, overload

from polyrlm.errors import ConfigError

__all__ = [
    "GUEST_ROOT",
    "SANDBOX_PATH",
    "SANDBOX_SYSTEM_PATHS",
    "SHELL_ENV_KEEP",
    "SHELL_LOCALE",
    "HostDirs",
    "Layout",
    "SandboxFlag",
    "bwrap_argv",
    "bwrap_path",
    "choose_sandbox",
    "host_layout",
    "sandbox_layout",
    "shell_env",
]

#: System folders the sandbox sees read-only, where they exist (a symlink,
#: such as ``/bin -> usr/bin``, is recreated as the same symlink).
SANDBOX_SYSTEM_PATHS = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/opt",
)
#: Where the sandbox sees the environment's own folders.
GUEST_ROOT = "/rlm"
#: PATH inside the sandbox, after the environment's commands.
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
#: Host environment variables the shell inherits; nothing else (no API keys).
SHELL_ENV_KEEP = ("TZ",)
#: The shell's locale: the context files are UTF-8, and `wc -m` counts characters.
SHELL_LOCALE = "C.UTF-8"


def bwrap_path() -> str | None:
    """The bubblewrap executable, if installed."""
    return shutil.which("bwrap")


_log = logging.getLogger(__name__)
_warned = False


def _warn_unsandboxed() -> None:
    global _warned
    if not _warned:
        _warned = True
        _log.warning(
            "polyrlm bash backend: bubblewrap (bwrap) is not installed, so the shell is NOT "
            "sandboxed: the model's commands run as this user, with this machine's files and "
            "network. Install it (Debian: apt-get install bubblewrap), or pass sandbox=False "
            "to choose this knowingly."
        )


class _Shell(Protocol):
    """What the flag reads of an environment (the bash one)."""

    @property
    def is_sandboxed(self) -> bool: ...


class SandboxFlag:
    """``sandboxed``: on the class, whether the default configuration is
    sandboxed here (bwrap installed); on an environment, whether it is."""

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> bool: ...
    @overload
    def __get__(self, obj: _Shell, owner: type[Any]) -> bool: ...
    def __get__(self, obj: _Shell | None, owner: type[Any]) -> bool:
        return bwrap_path() is not None if obj is None else obj.is_sandboxed


def choose_sandbox(wanted: bool | None) -> tuple[str | None, bool]:
    """bwrap's path and whether to sandbox, for ``Config.sandbox=wanted``:
    True requires bwrap, False never sandboxes, None sandboxes when bwrap
    is installed and warns (once) when it is not."""
    bwrap = bwrap_path()
    if wanted and bwrap is None:
        raise ConfigError(
            "the bash backend's sandbox needs bubblewrap (bwrap), which is not installed: "
            "apt-get install bubblewrap, or pass sandbox=False to run unsandboxed"
        )
    if wanted is None and bwrap is None:
        _warn_unsandboxed()
    return bwrap, bwrap is not None if wanted is None else wanted


@dataclass(frozen=True)
class HostDirs:
    """The environment's private folders on the host."""

    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def context(self) -> Path:
        return self.root / "context"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def ctl(self) -> Path:
        return self.root / "ctl"

    @property
    def answer(self) -> Path:
        return self.root / "answer"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def make(self) -> None:
        for folder in (self.work, self.context, self.bin, self.ctl, self.answer, self.tmp):
            folder.mkdir(exist_ok=True)


@dataclass(frozen=True)
class Layout:
    """Where the shell sees each folder (all absolute paths, as strings)."""

    work: str
    context: str
    bin: str
    ctl: str
    answer: str
    tmp: str
    bridge: str


def sandbox_layout() -> Layout:
    g = GUEST_ROOT
    return Layout(
        work=f"{g}/work",
        context=f"{g}/context",
        bin=f"{g}/bin",
        ctl=f"{g}/ctl",
        answer=f"{g}/answer",
        tmp="/tmp",
        bridge=f"{g}/bridge/bridge.sock",
    )


def host_layout(dirs: HostDirs, bridge: Path) -> Layout:
    return Layout(
        work=str(dirs.work),
        context=str(dirs.context),
        bin=str(dirs.bin),
        ctl=str(dirs.ctl),
        answer=str(dirs.answer),
        tmp=str(dirs.tmp),
        bridge=str(bridge),
    )


def shell_env(
    layout: Layout, *, token: str, context: str, context_dir: str, sandboxed: bool
) -> dict[str, str]:
    """The shell's whole environment: a few host variables, the locale, its
    folders, the context and the bridge. No API key reaches it."""
    env = {k: os.environ[k] for k in SHELL_ENV_KEEP if k in os.environ}
    path = SANDBOX_PATH if sandboxed else os.environ.get("PATH", SANDBOX_PATH)
    env.update(
        PATH=f"{layout.bin}:{path}",
        LANG=SHELL_LOCALE,
        HOME=layout.work,
        TMPDIR=layout.tmp,
        TERM="dumb",
        PAGER="cat",
        PS1="",  # an interactive shell prints its prompt before it reads our set-up
        PS2="",
        CONTEXT=context,
        CONTEXT_DIR=context_dir,
        POLYRLM_BRIDGE=layout.bridge,
        POLYRLM_BRIDGE_TOKEN=token,
    )
    return env


def _covered(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def bwrap_argv(
    bwrap: str,
    dirs: HostDirs,
    bridge_dir: Path,
    context_root: Path | None,
    context_binds: list[tuple[Path, str]],
) -> list[str]:
    """The bubblewrap command line (the shell's own command follows it).

    ``context_root`` replaces the context folder (a directory given as the
    context); ``context_binds`` are ``(host path, path under the context
    folder)`` of files or folders bound read-only over their placeholders.
    """
    g = sandbox_layout()
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
    bound: list[str] = []
    for path in SANDBOX_SYSTEM_PATHS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
            bound.append(path)
    # The host interpreter runs the bridge client; it may live outside /usr.
    for prefix in {
        sys.base_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
    }:
        if not _covered(prefix, bound):
            argv += ["--ro-bind", prefix, prefix]
            bound.append(prefix)
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--bind", str(dirs.work), g.work, "--bind", str(dirs.tmp), g.tmp]
    argv += ["--ro-bind", str(context_root or dirs.context), g.context]
    for source, relative in context_binds:
        argv += ["--ro-bind", str(source), f"{g.context}/{relative}"]
    argv += ["--ro-bind", str(dirs.bin), g.bin, "--ro-bind", str(dirs.ctl), g.ctl]
    argv += ["--bind", str(dirs.answer), g.answer]
    argv += ["--ro-bind", str(bridge_dir), os.path.dirname(g.bridge)]
    # Last: everything above is mounted; now nothing else can be written.
    argv += ["--remount-ro", "/dev", "--remount-ro", "/proc", "--remount-ro", "/"]
    argv += ["--chdir", g.work]
    return argv
