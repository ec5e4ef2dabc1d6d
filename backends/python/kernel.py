"""``python``: the model's code runs in a Jupyter kernel of its own.

jupyter_client drives an ipykernel process started from this interpreter,
with a minimal environment (no host API keys), over IPC sockets in the
environment's own folder. By default (``Config.sandbox``, when bubblewrap is
installed) the kernel runs in a sandbox (:mod:`polyrlm.sandbox`, folders in
:mod:`polyrlm.backends.python.kernel_launch`): its own namespaces, an
unprivileged user, no host files but the read-only system, interpreter and
context, no network, capped memory, processes and private disk. Sub-calls
(``schema=`` makes them typed) and the user's tools reach the host through
the bridge (:mod:`polyrlm.bridge`): a tool is a kernel function that sends
its named arguments; the tool itself runs on the host. What the kernel
sends is capped and checked on the host
(:mod:`~polyrlm.backends.python.kernel_io`,
:mod:`~polyrlm.backends.python.kernel_report`). A cell past its timeout is
interrupted (its variables survive); a kernel that dies is restarted, the
context and the tools loaded again, and the model told that its variables
were lost.
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from jupyter_core.utils import ensure_event_loop
from pydantic import Field

from polyrlm.backends.python.guide import python_compact_guide, python_guide
from polyrlm.backends.python.inline import PYTHON_CONTRACT, context_hint
from polyrlm.backends.python.kernel_io import (
    CellRun,
    cap_sockets,
    run_cell,
    unwatch_sockets,
    wait_ready,
    watch_sockets,
)
from polyrlm.backends.python.kernel_launch import (
    RESTORE_HELPERS,
    KernelDirs,
    boot_code,
    guide_note,
    kernel_argv,
    kernel_env,
)
from polyrlm.backends.python.kernel_report import (
    UnreadableReport,
    answer_of,
    read_block_report,
    read_variables,
)
from polyrlm.bridge import Bridge
from polyrlm.contexts import load_python_context
from polyrlm.environment import ContractSnippets, EnvConfig, Environment, PythonGuides, SubCalls
from polyrlm.errors import BackendUnavailable, EnvironmentCrashed
from polyrlm.records import ExecResult, State, VarInfo
from polyrlm.sandbox import (
    SANDBOX_MEMORY_LIMIT_BYTES,
    SandboxConfig,
    SandboxFlag,
    SandboxWatch,
    choose_sandbox,
    deprioritize,
    descendants,
    find_payload,
    kill_and_wait,
    preexec_limits,
    send,
    snapshot,
)

__all__ = [
    "KERNEL_INTERRUPT_GRACE_S",
    "KERNEL_KILL_WAIT_S",
    "KERNEL_MEMORY_LIMIT_BYTES",
    "KERNEL_QUERY_TIMEOUT_S",
    "KERNEL_START_TIMEOUT_S",
    "KernelPythonEnvironment",
]

#: Seconds a kernel may take to start and answer.
KERNEL_START_TIMEOUT_S = 60.0
#: Seconds an interrupted cell may take to stop before the kernel is restarted.
KERNEL_INTERRUPT_GRACE_S = 5.0
#: Address space of each kernel process, in bytes (RLIMIT_AS).
KERNEL_MEMORY_LIMIT_BYTES = SANDBOX_MEMORY_LIMIT_BYTES
#: Seconds to wait, on close or restart, until every killed process is gone.
KERNEL_KILL_WAIT_S = 5.0
#: Seconds ``read_state`` waits for each of its two queries.
KERNEL_QUERY_TIMEOUT_S = 10.0

T = TypeVar("T")


class KernelPythonEnvironment(PythonGuides, Environment):
    """A Python REPL in a separate Jupyter kernel process, sandboxed by
    bubblewrap when it is installed."""

    name: ClassVar[str] = "python"
    language: ClassVar[str] = "python"
    fence_tags: ClassVar[tuple[str, ...]] = ("python", "py", "repl")
    sandboxed = SandboxFlag()
    contract: ClassVar[ContractSnippets] = PYTHON_CONTRACT

    class Config(SandboxConfig):
        """Options of the Jupyter-kernel backend; the caps come from
        :class:`~polyrlm.sandbox.SandboxConfig`."""

        start_timeout_s: float = Field(KERNEL_START_TIMEOUT_S, gt=0, description="Start-up.")
        interrupt_grace_s: float = Field(
            KERNEL_INTERRUPT_GRACE_S, gt=0, description="Seconds for an interrupt to land."
        )

    config: Config

    def __init__(self, subcalls: SubCalls, config: EnvConfig | None = None) -> None:
        if config is not None and not isinstance(config, self.Config):
            config = self.Config(**config.model_dump(exclude_unset=True))
        super().__init__(subcalls, config)
        self._bwrap, self.is_sandboxed = choose_sandbox(self.config.sandbox, "python")
        self.workdir = Path(tempfile.mkdtemp(prefix="polyrlm-kernel-"))
        self.dirs = KernelDirs(self.workdir)
        self.dirs.make()
        self.bridge = Bridge(self.subcalls)
        self._loaded = False
        self._hint = "an empty str"
        self.km: Any = None
        self.kc: Any = None
        self.watch: SandboxWatch | None = None
        self._kernel_pid: int | None = None
        self._monitors: list[Any] = []
        # jupyter_client keeps an event loop per thread (in a context variable):
        # every kernel call goes through this one thread, whose loop is closed
        # last; the sandbox also dies with the thread that started it.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="polyrlm-kernel")
        self._closed = False
        try:
            self._on_thread(self._start)
        except BaseException:
            self.close()
            raise

    @classmethod
    def keeps_spare(cls, config: EnvConfig) -> bool:
        return True  # a kernel takes 0.4-0.5 s to start (polyrlm.spares)

    def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return self._pool.submit(fn, *args).result()

    # -- kernel life --

    def _start(self) -> None:
        from jupyter_client.manager import KernelManager

        cfg, dirs, bwrap = self.config, self.dirs, self._bwrap if self.is_sandboxed else None
        bridge_dir = self.bridge.directory

        class _Manager(KernelManager):
            def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
                # Ours, not the kernelspec's: this interpreter, maybe in bwrap.
                conn = Path(self.connection_file)
                return kernel_argv(
                    dirs, conn, bwrap=bwrap, bridge_dir=bridge_dir, tmp_bytes=cfg.disk_limit_bytes
                )

        km = _Manager(kernel_name="python3", transport="ipc", ip=str(dirs.channels / "kernel"))
        km.connection_file = str(dirs.private / "connection.json")
        self.km = km
        km.start_kernel(
            env=kernel_env(self.bridge.env, self.is_sandboxed),
            cwd=str(self.workdir),
            stdout=subprocess.DEVNULL,  # the kernel's own chatter
            stderr=subprocess.DEVNULL,
            preexec_fn=preexec_limits(
                cfg.memory_limit_bytes, cfg.disk_limit_bytes if self.is_sandboxed else None
            ),
        )
        provisioner: Any = km.provisioner  # a LocalProvisioner: it has the pid
        launcher = int(provisioner.pid)
        if self.is_sandboxed:
            self.watch = SandboxWatch(
                launcher,
                process_limit=cfg.process_limit,
                disk=(dirs.channels,),
                disk_limit_bytes=cfg.disk_limit_bytes,
            )
        self.kc = km.client()
        cap_sockets(self.kc.context)  # before start_channels makes the sockets
        self.kc.start_channels()
        self._monitors = watch_sockets(self.kc)
        try:
            wait_ready(self.kc, cfg.start_timeout_s, self._alive)
        except RuntimeError as exc:
            if self.is_sandboxed:
                raise BackendUnavailable(
                    f"the Python kernel did not start in its bubblewrap sandbox ({exc}); "
                    "pass sandbox=False to run it unsandboxed"
                ) from None
            raise
        self._kernel_pid = launcher
        if self.is_sandboxed:
            self._kernel_pid = find_payload(launcher, "bwrap")[0]
            deprioritize(self._kernel_pid)
        # Every (re)start: the tools come back with the namespace.
        specs = [t.spec() for t in getattr(self.subcalls, "tools", ())]
        self._run_quiet(boot_code(cfg.capture_limit_chars, specs))
        if self._loaded:
            self._run_quiet(self._load_code())

    def _stop(self) -> None:
        """Kill the kernel and every process it started; reap; close channels."""
        if self.kc is not None:
            unwatch_sockets(self.kc, self._monitors)
            self._monitors = []
            self.kc.stop_channels()
            self.kc = None
        km, self.km = self.km, None
        if km is not None:
            self._kill_tree(km)
            try:
                km.shutdown_kernel(now=True)
            finally:
                km.cleanup_resources()
        if self.watch is not None:
            self.watch.stop()
            self.watch = None

    def _kill_tree(self, km: Any) -> None:
        """SIGKILL the sandbox (its pid namespace: every process in it), or,
        unsandboxed, the kernel and its descendants; wait until none runs."""
        launcher = getattr(km.provisioner, "pid", None) if km.provisioner else None
        if launcher is None:
            return
        tree = descendants(launcher, snapshot()) | {launcher}
        if self.watch is not None:
            self.watch.kill()
        kill_and_wait(tree, KERNEL_KILL_WAIT_S)

    def _restart(self) -> None:
        self._stop()
        for entry in self.dirs.channels.iterdir():  # old sockets; anything it left
            with contextlib.suppress(OSError):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        self._start()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._kill_now()  # from this thread: ends a block still running
            self._on_thread(self._stop_for_good)
            self._pool.shutdown()
        self.bridge.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _kill_now(self) -> None:
        """SIGKILL the sandbox or the kernel; safe from any thread (a signal)."""
        if self.watch is not None:
            self.watch.kill()
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()

    def _stop_for_good(self) -> None:
        self._stop()
        ensure_event_loop().close()  # jupyter_client's loop of this thread

    # -- running code --

    def _interrupt(self) -> None:
        # The kernel itself, not bwrap's process group (bwrap would die of it).
        if self._kernel_pid is not None:
            send([self._kernel_pid], signal.SIGINT)

    def _alive(self) -> bool:
        return bool(self.km is not None and self.km.is_alive())

    def _run(
        self, code: str, timeout: float, expression: str | None, *, silent: bool = False
    ) -> CellRun:
        return run_cell(
            self.kc,
            code,
            expression=expression,
            timeout=timeout,
            grace=self.config.interrupt_grace_s,
            limit=self.config.capture_limit_chars,
            interrupt=self._interrupt,
            alive=self._alive,
            monitors=self._monitors,
            silent=silent,
        )

    def _run_quiet(self, code: str, expression: str | None = None) -> CellRun:
        """Run set-up code; fail loudly (it is ours, not the model's)."""
        run = self._run(code, self.config.start_timeout_s, expression, silent=True)
        if run.error is not None or run.timed_out or run.lost:
            raise EnvironmentCrashed(f"kernel set-up failed: {run.error or run.lost}")
        return run

    def _lost(self, how: str, run: CellRun) -> ExecResult:
        km = self.km
        code = km.exit_status() if km is not None and hasattr(km, "exit_status") else None
        if self._closed:  # killed by close(): nothing to restart
            return ExecResult(error="the environment was closed", restarted=True)
        tripped = self.watch.tripped if self.watch is not None else None
        self._restart()
        why = (
            f"was stopped with every process of its sandbox because {tripped.why}"
            if tripped is not None
            else how + (f" (exit status {code})" if code is not None else "")
        )
        return ExecResult(
            output=run.output,
            error=(
                f"KernelDied: the Python kernel {why}; it was restarted: every variable is "
                "lost, the context is loaded again"
            ),
            truncated_chars=run.dropped,
            duration_s=run.duration_s,
            restarted=True,
            timed_out=run.timed_out,
        )

    # -- the protocol --

    def _load_code(self) -> str:
        return (
            "import pickle as __p\n"
            f"with open({self.dirs.context_file(self.is_sandboxed)!r}, 'rb') as __f:\n"
            "    context = __p.load(__f)\n"
            "if isinstance(context, dict):\n"
            "    globals().update({k: v for k, v in context.items() if isinstance(k, str)\n"
            "                      and k.isidentifier() and k not in globals()})\n"
            "del __p, __f\n"
        )

    def load_context(self, context: Any) -> None:
        self._on_thread(self._load_context, context)

    def execute(self, code: str) -> ExecResult:
        return self._on_thread(self._execute, code)

    def read_state(self) -> State:
        return self._on_thread(self._read_state)

    def _load_context(self, context: Any) -> None:
        value = load_python_context(context)
        self._hint = context_hint(value)
        with (self.dirs.context / "context.pickle").open("wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        self._loaded = True
        self._run_quiet(self._load_code())

    def _execute(self, code: str) -> ExecResult:
        limit = self.exec_limit_s()
        run = self._run(code, limit, "__polyrlm_report()")
        if run.lost is not None:
            return self._lost(run.lost, run)
        error, ready, answer, dropped = run.error, False, None, run.dropped
        if run.timed_out:
            error = (
                f"TimeoutError: the block ran longer than {limit:g} s and was "
                "interrupted; variables set before that are kept"
            )
        if run.status == "ok" or run.status is None:  # an error reply carries no report
            try:
                report = read_block_report(run.value)
            except UnreadableReport as exc:
                problem: str | None = (
                    f"ReportError: the block's result could not be read: {exc}; the report "
                    "helpers were restored"
                )
                self._run(RESTORE_HELPERS, KERNEL_QUERY_TIMEOUT_S, None, silent=True)
            else:
                dropped += report.dropped
                ready, answer, problem = answer_of(report)
            if problem is not None:
                error = f"{error}\n{problem}" if error else problem
        return ExecResult(
            output=run.output,
            error=error,
            truncated_chars=dropped,
            duration_s=run.duration_s,
            timed_out=run.timed_out,
            answer_ready=ready,
            answer=answer,
        )

    def _read_state(self) -> State:
        variables: list[VarInfo] = []
        with contextlib.suppress(UnreadableReport):
            listed = read_variables(
                self._run("", KERNEL_QUERY_TIMEOUT_S, "__polyrlm_state()", silent=True).value
            )
            variables = [v.as_var_info() for v in listed]
        ready, answer = False, None
        with contextlib.suppress(UnreadableReport):
            run = self._run("", KERNEL_QUERY_TIMEOUT_S, "__polyrlm_report()", silent=True)
            ready, answer, _ = answer_of(read_block_report(run.value))
        return State(variables=tuple(variables), answer=answer, answer_ready=ready)

    def compact_guide(self) -> str:
        return python_compact_guide(flavour="a Jupyter kernel", context_hint=self._hint)

    def prompt_guide(self) -> str:
        return python_guide(
            flavour="a Jupyter kernel in its own process, "
            + ("sandboxed" if self.is_sandboxed else "NOT sandboxed"),
            context_hint=self._hint,
            imports="numpy, pandas and the Python standard library are importable.\n"
            + guide_note(self.is_sandboxed),
        )
