"""Where the shell sees its folders, its environment variables, and its
bubblewrap command line.

Sandboxed (:class:`polyrlm.sandbox.Bwrap`: namespaces, an unprivileged user,
the read-only system, the host's interpreter for the bridge client, caps),
the shell gets under :data:`~polyrlm.sandbox.GUEST_ROOT` its working
directory (writable, on the host's disk: its files outlive a restart), the
context (read-only), its commands, the control folder and the bridge socket
(read-only), and the answer folder (writable, for ``final``). ``/tmp`` is a
private size-capped tmpfs. Nothing else of the host is there: not its home
folders, not its ``/tmp``, not ``/run``.

Unsandboxed, the same folders are used at their host paths.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from polyrlm.sandbox import (
    GUEST_ROOT,
    SANDBOX_PATH,
    Bwrap,
    PythonLayout,
    host_python,
    sandbox_python,
)

__all__ = [
    "SHELL_ENV_KEEP",
    "SHELL_LOCALE",
    "HostDirs",
    "Layout",
    "bwrap_argv",
    "empty_folder",
    "guest_python",
    "host_layout",
    "sandbox_layout",
    "shell_env",
    "system_path",
]

#: Host environment variables the shell inherits; nothing else (no API keys).
SHELL_ENV_KEEP = ("TZ",)
#: The shell's locale: the context files are UTF-8, and `wc -m` counts characters.
SHELL_LOCALE = "C.UTF-8"


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

    @property
    def private(self) -> Path:
        """The sandbox's masks and such; never bound in."""
        return self.root / "private"

    def make(self) -> None:
        for folder in (
            self.work,
            self.context,
            self.bin,
            self.ctl,
            self.answer,
            self.tmp,
            self.private,
        ):
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


def system_path(sandboxed: bool) -> str:
    """The shell's PATH after its own ``bin/``: the sandbox's, or the host's."""
    return SANDBOX_PATH if sandboxed else os.environ.get("PATH", SANDBOX_PATH)


def shell_env(
    layout: Layout, *, token: str, context: str, context_dir: str, sandboxed: bool
) -> dict[str, str]:
    """The shell's whole environment: a few host variables, the locale, its
    folders, the context and the bridge. No API key reaches it."""
    env = {k: os.environ[k] for k in SHELL_ENV_KEEP if k in os.environ}
    env.update(
        PATH=f"{layout.bin}:{system_path(sandboxed)}",
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


def bwrap_argv(
    bwrap: str,
    dirs: HostDirs,
    bridge_dir: Path,
    context: tuple[Path | None, list[tuple[Path, str]]],
    tmp_bytes: int,
    shell: list[str],
) -> list[str]:
    """The bubblewrap command line that runs ``shell``.

    ``context`` is ``(root, binds)``: ``root`` replaces the context folder
    (a directory given as the context); ``binds`` are ``(host path, path
    under the context folder)`` of files or folders bound read-only over
    their placeholders.
    """
    g = sandbox_layout()
    box = Bwrap(bwrap, dirs.private)
    root, binds = context
    box.bind(dirs.work, g.work)
    box.tmpfs(g.tmp, tmp_bytes)
    box.ro_bind(root or dirs.context, g.context)
    for source, relative in binds:
        box.ro_bind(source, f"{g.context}/{relative}")
    box.ro_bind(dirs.bin, g.bin)
    box.ro_bind(dirs.ctl, g.ctl)
    box.bind(dirs.answer, g.answer)
    box.ro_bind(bridge_dir, os.path.dirname(g.bridge))
    return box.command(g.work, shell)


def guest_python(sandboxed: bool) -> PythonLayout:
    """The interpreter the shell's commands run (``llm``, ``to_json``, ...)."""
    return sandbox_python() if sandboxed else host_python()


def empty_folder(folder: Path) -> None:
    """Remove everything in ``folder`` (the folder stays)."""
    for entry in list(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
