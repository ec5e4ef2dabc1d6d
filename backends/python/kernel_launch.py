"""Where the kernel runs: its folders, its environment, its command line, and
the code it runs first.

Sandboxed (the default when bubblewrap is installed), the kernel is started
by :class:`polyrlm.sandbox.Bwrap` and sees, besides the read-only system and
interpreter: its channels folder (:data:`GUEST_CHANNELS`, writable: its
ZeroMQ sockets and its copy of the connection file, with paths as it sees
them), the context folder (read-only), the bridge socket's folder
(read-only), and private size-capped tmpfs at ``/tmp`` (its home and
working directory) and ``/dev/shm``. Unsandboxed, it runs on the host in the
environment's folder, with the host's interpreter.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyrlm import bridge_client
from polyrlm.backends.python.kernel_report import (
    KERNEL_ANSWER_MAX_CHARS,
    KERNEL_MAX_VARIABLES,
    KERNEL_NAME_MAX_CHARS,
)
from polyrlm.pycell import PYCELL_MODULE, boot_source, own_source
from polyrlm.sandbox import GUEST_ROOT, SANDBOX_PATH, Bwrap, host_python, sandbox_python

__all__ = [
    "GUEST_BRIDGE",
    "GUEST_CHANNELS",
    "GUEST_CONTEXT",
    "GUEST_HOME",
    "HELPERS_MODULE",
    "KERNEL_ENV_KEEP",
    "KERNEL_SANDBOX_ENV_KEEP",
    "RESTORE_HELPERS",
    "KernelDirs",
    "boot_code",
    "guide_note",
    "kernel_argv",
    "kernel_env",
]

#: Host environment variables the unsandboxed kernel inherits; nothing else (no API keys).
KERNEL_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PYTHONPATH")
#: Those the sandboxed kernel inherits (host paths mean nothing there).
KERNEL_SANDBOX_ENV_KEEP = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
GUEST_CHANNELS = f"{GUEST_ROOT}/channels"
GUEST_CONTEXT = f"{GUEST_ROOT}/context"
GUEST_BRIDGE = f"{GUEST_ROOT}/bridge"
GUEST_HOME = "/tmp"
#: Added to the kernel's environment by jupyter_client: the host's pid, which
#: the kernel would watch (and, not seeing it in its namespace, exit).
_LAUNCHER_VARS = ("JPY_PARENT_PID",)


@dataclass(frozen=True)
class KernelDirs:
    """The environment's folders on the host."""

    root: Path

    @property
    def channels(self) -> Path:
        return self.root / "channels"

    @property
    def context(self) -> Path:
        return self.root / "context"

    @property
    def private(self) -> Path:
        """The host's connection file, the sandbox's masks; never bound in."""
        return self.root / "private"

    def make(self) -> None:
        for folder in (self.channels, self.context, self.private):
            folder.mkdir(exist_ok=True)

    def context_file(self, sandboxed: bool) -> str:
        """The context pickle, as the kernel sees it."""
        return f"{GUEST_CONTEXT if sandboxed else self.context}/context.pickle"


def kernel_env(bridge_env: dict[str, str], sandboxed: bool) -> dict[str, str]:
    """The kernel's whole environment: a few host variables and the bridge."""
    if not sandboxed:
        env = {k: os.environ[k] for k in KERNEL_ENV_KEEP if k in os.environ}
        return {**env, **bridge_env}
    env = {k: os.environ[k] for k in KERNEL_SANDBOX_ENV_KEEP if k in os.environ}
    env.update(sandbox_python().env)
    env.update(
        PATH=SANDBOX_PATH,
        HOME=GUEST_HOME,
        TMPDIR=GUEST_HOME,
        POLYRLM_BRIDGE=f"{GUEST_BRIDGE}/{Path(bridge_env['POLYRLM_BRIDGE']).name}",
        POLYRLM_BRIDGE_TOKEN=bridge_env["POLYRLM_BRIDGE_TOKEN"],
    )
    return env


def _guest_connection_file(dirs: KernelDirs, host_file: Path) -> str:
    """A copy of the connection file with the socket paths the kernel sees."""
    info = json.loads(host_file.read_text())
    info["ip"] = f"{GUEST_CHANNELS}/{Path(info['ip']).name}"
    guest = dirs.channels / "connection.json"
    guest.write_text(json.dumps(info))
    return f"{GUEST_CHANNELS}/{guest.name}"


def kernel_argv(
    dirs: KernelDirs,
    connection_file: Path,
    *,
    bwrap: str | None,
    bridge_dir: Path,
    tmp_bytes: int,
) -> list[str]:
    """The command that starts the kernel (under bwrap when ``bwrap`` is given)."""
    if bwrap is None:
        return [host_python().executable, "-m", "ipykernel_launcher", "-f", str(connection_file)]
    box = Bwrap(bwrap, dirs.private)
    box.bind(dirs.channels, GUEST_CHANNELS)
    box.ro_bind(dirs.context, GUEST_CONTEXT)
    box.ro_bind(bridge_dir, GUEST_BRIDGE)
    box.tmpfs(GUEST_HOME, tmp_bytes)
    box.tmpfs("/dev/shm", tmp_bytes)  # multiprocessing's semaphores
    conn = _guest_connection_file(dirs, connection_file)
    kernel = [box.python.executable, "-m", "ipykernel_launcher", "-f", conn]
    return box.command(GUEST_HOME, kernel, unset=_LAUNCHER_VARS)


_HERE = Path(__file__).resolve().parent
#: The kernel-side module of the helpers (:mod:`~polyrlm.backends.python.kernel_prelude`).
HELPERS_MODULE = "_polyrlm_kernel"
_SANDBOXED_NOTE = (
    "The kernel runs in a sandbox (bubblewrap): no network, the context read-only; /tmp\n"
    "(your home and working directory) is writable. Memory, processes and disk are capped;\n"
    "past a cap the kernel is restarted.\n"
)
_UNSANDBOXED_NOTE = (
    "The kernel is NOT sandboxed: it runs on the host as the host's user, with its files\n"
    "and network. Do not change anything outside its working directory.\n"
)
#: Run when a report came back unreadable: the helpers bound again.
RESTORE_HELPERS = f"__import__('sys').modules[{HELPERS_MODULE!r}].helpers(get_ipython().user_ns)\n"


def boot_code(capture_limit: int, tool_specs: Sequence[Mapping[str, Any]] = ()) -> str:
    """What the host runs first in a new kernel: pycell, the bridge client
    and the prelude, each a module of its own; then the model's names, with
    a function per user tool (``tool_specs``: :meth:`polyrlm.tools.Tool.spec`)."""
    client = Path(bridge_client.__file__).read_text()
    prelude = (_HERE / "kernel_prelude.py").read_text()
    for name, value in (
        ("CAPTURE_LIMIT", capture_limit),
        ("ANSWER_MAX_CHARS", KERNEL_ANSWER_MAX_CHARS),
        ("MAX_VARIABLES", KERNEL_MAX_VARIABLES),
        ("NAME_MAX_CHARS", KERNEL_NAME_MAX_CHARS),
    ):
        prelude = prelude.replace(f"__POLYRLM_{name}__", str(value))
    # A module of its own for the helpers; only the public names reach the user.
    return (
        boot_source(PYCELL_MODULE, own_source())
        + boot_source(HELPERS_MODULE, client + "\n" + prelude)
        + f"__import__('sys').modules[{HELPERS_MODULE!r}]._install(get_ipython().user_ns, "
        + f"__import__('json').loads({json.dumps(list(tool_specs))!r}))\n"
    )


def guide_note(sandboxed: bool) -> str:
    """The prompt guide's lines on where the kernel runs."""
    return _SANDBOXED_NOTE if sandboxed else _UNSANDBOXED_NOTE
