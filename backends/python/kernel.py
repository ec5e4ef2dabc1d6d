"""``python``: the model's code runs in a Jupyter kernel of its own.

jupyter_client drives an ipykernel process started from this interpreter,
with a minimal environment (no host API keys), in a private working
directory, over IPC sockets in that directory. Sub-calls reach the host
through the bridge (:mod:`polyrlm.bridge`). A cell past its timeout is
interrupted (its variables survive); a kernel that dies is restarted, the
context loaded again, and the model told that its variables were lost.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import pickle
import queue
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from jupyter_core.utils import ensure_event_loop
from pydantic import Field

from polyrlm import bridge_client
from polyrlm.backends.python.guide import python_guide
from polyrlm.backends.python.inline import PYTHON_CONTRACT, context_hint
from polyrlm.bridge import Bridge
from polyrlm.contexts import load_python_context
from polyrlm.environment import ContractSnippets, EnvConfig, Environment
from polyrlm.errors import EnvironmentCrashed
from polyrlm.pycell import PYCELL_MODULE, boot_source, own_source
from polyrlm.records import ExecResult, State, VarInfo

__all__ = [
    "KERNEL_ENV_KEEP",
    "KERNEL_INTERRUPT_GRACE_S",
    "KERNEL_MEMORY_LIMIT_BYTES",
    "KERNEL_POLL_S",
    "KERNEL_START_TIMEOUT_S",
    "KernelPythonEnvironment",
]

#: Seconds a kernel may take to start and answer.
KERNEL_START_TIMEOUT_S = 60.0
#: Seconds an interrupted cell may take to stop before the kernel is restarted.
KERNEL_INTERRUPT_GRACE_S = 5.0
#: Address space of the kernel process, in bytes (RLIMIT_AS).
KERNEL_MEMORY_LIMIT_BYTES = 8 * 1024**3
#: Seconds between checks that the kernel is still alive while a cell runs.
KERNEL_POLL_S = 0.2
#: Host environment variables the kernel inherits; nothing else (no API keys).
KERNEL_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "PYTHONPATH")

T = TypeVar("T")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HERE = Path(__file__).resolve().parent


def _prelude(capture_limit: int) -> str:
    client = Path(bridge_client.__file__).read_text()
    prelude = (_HERE / "kernel_prelude.py").read_text()
    prelude = prelude.replace("__POLYRLM_CAPTURE_LIMIT__", str(capture_limit))
    body = json.dumps(client + "\n" + prelude)
    # A private namespace for the helpers; only the public names reach the user.
    return boot_source(PYCELL_MODULE, own_source()) + (
        "def __polyrlm_boot():\n"
        "    ns = {'__name__': 'polyrlm_kernel'}\n"
        f"    exec(compile({body}, '<polyrlm>', 'exec'), ns)\n"
        "    ns['_install'](get_ipython().user_ns)\n"
        "__polyrlm_boot()\ndel __polyrlm_boot\n"
    )


def _limit_memory(limit: int | None) -> Any:
    if limit is None:
        return None

    def apply() -> None:  # runs in the child, before it execs the kernel
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


class KernelPythonEnvironment(Environment):
    """A Python REPL in a separate Jupyter kernel process."""

    name: ClassVar[str] = "python"
    language: ClassVar[str] = "python"
    fence_tags: ClassVar[tuple[str, ...]] = ("python", "py", "repl")
    sandboxed: ClassVar[bool] = False  # its own process, but the host's user and files
    contract: ClassVar[ContractSnippets] = PYTHON_CONTRACT

    class Config(EnvConfig):
        """Options of the Jupyter-kernel backend."""

        start_timeout_s: float = Field(KERNEL_START_TIMEOUT_S, gt=0, description="Start-up.")
        interrupt_grace_s: float = Field(
            KERNEL_INTERRUPT_GRACE_S, gt=0, description="Seconds for an interrupt to land."
        )
        memory_limit_bytes: int | None = Field(
            KERNEL_MEMORY_LIMIT_BYTES, ge=2**28, description="RLIMIT_AS of the kernel."
        )

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workdir = Path(tempfile.mkdtemp(prefix="polyrlm-kernel-"))
        self.bridge = Bridge(self.subcalls)
        self._context_file: Path | None = None
        self._hint = "an empty str"
        self.km: Any = None
        self.kc: Any = None
        # jupyter_client keeps an event loop per thread (in a context variable):
        # every kernel call goes through this one thread, whose loop is closed last.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="polyrlm-kernel")
        self._closed = False
        try:
            self._on_thread(self._start)
        except BaseException:
            self.close()
            raise

    def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return self._pool.submit(fn, *args).result()

    # -- kernel life --

    def _start(self) -> None:
        from jupyter_client.manager import KernelManager

        class _Manager(KernelManager):
            def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
                cmd: list[str] = super().format_kernel_cmd(extra_arguments)
                cmd[0] = sys.executable  # this interpreter, not whatever `python` is on PATH
                return cmd

        env = {k: os.environ[k] for k in KERNEL_ENV_KEEP if k in os.environ}
        env.update(self.bridge.env)
        km = _Manager(kernel_name="python3", transport="ipc", ip=str(self.workdir / "kernel"))
        km.connection_file = str(self.workdir / "connection.json")
        km.start_kernel(
            env=env,
            cwd=str(self.workdir),
            stdout=subprocess.DEVNULL,  # the kernel's own chatter
            stderr=subprocess.DEVNULL,
            preexec_fn=_limit_memory(self.config.memory_limit_bytes),
        )
        self.km = km
        self.kc = km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=self.config.start_timeout_s)
        self._run_quiet(_prelude(self.config.capture_limit_chars))
        if self._context_file is not None:
            self._run_quiet(self._load_code())

    def _stop(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None
        if self.km is not None:
            try:
                self.km.shutdown_kernel(now=True)
            finally:
                self.km.cleanup_resources()
                self.km = None

    def _restart(self) -> None:
        self._stop()
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
        """SIGKILL the kernel process; safe from any thread (a signal)."""
        km = self.km
        process = getattr(getattr(km, "provisioner", None), "process", None)
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()

    def _stop_for_good(self) -> None:
        self._stop()
        ensure_event_loop().close()  # jupyter_client's loop of this thread

    # -- running code --

    def _run_quiet(self, code: str, expression: str | None = None) -> Any:
        """Run set-up code; fail loudly (it is ours, not the model's)."""
        result, reply = self._run(code, self.config.start_timeout_s, expression, silent=True)
        if result.error is not None or result.timed_out or result.restarted:
            raise EnvironmentCrashed(f"kernel set-up failed: {result.error}")
        return reply

    def _run(
        self, code: str, timeout: float, expression: str | None, *, silent: bool = False
    ) -> tuple[ExecResult, Any]:
        started = time.perf_counter()
        kc = self.kc
        exprs = {"r": expression} if expression else {}
        msg_id = kc.execute(code, silent=silent, store_history=False, user_expressions=exprs)
        parts: list[str] = []
        error: str | None = None
        deadline = started + timeout
        timed_out = False
        while True:
            now = time.perf_counter()
            if now >= deadline:
                if timed_out:  # the interrupt did not land: the kernel is stuck
                    return self._lost("did not stop after an interrupt", started, True), None
                timed_out = True
                self.km.interrupt_kernel()
                deadline = now + self.config.interrupt_grace_s
            try:
                # The channel's own poll: the client's get_iopub_msg spins an
                # event loop per call, a millisecond per message.
                wait = min(KERNEL_POLL_S, max(deadline - now, 0.001))
                msg = kc.iopub_channel.get_msg(timeout=wait)
            except queue.Empty:
                if not self.km.is_alive():
                    return self._lost("died", started, timed_out), None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                parts.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                parts.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                error = _ANSI.sub("", "\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                break
        reply = self._shell_reply(msg_id)
        if timed_out:
            error = (
                f"TimeoutError: the block ran longer than {timeout:g} s and was interrupted; "
                "variables set before that are kept"
            )
        return (
            ExecResult(
                output="".join(parts),
                error=error,
                duration_s=time.perf_counter() - started,
                timed_out=timed_out,
            ),
            reply,
        )

    def _shell_reply(self, msg_id: str) -> Any:
        while True:
            reply = self.kc.shell_channel.get_msg(timeout=self.config.start_timeout_s)
            if reply["parent_header"].get("msg_id") == msg_id:
                value = reply["content"].get("user_expressions", {}).get("r")
                if value and value.get("status") == "ok":
                    # text/plain is the repr of the JSON text: undo the repr first
                    return json.loads(ast.literal_eval(value["data"]["text/plain"]))
                return None

    def _lost(self, how: str, started: float, timed_out: bool) -> ExecResult:
        code = self.km.exit_status() if hasattr(self.km, "exit_status") else None
        if self._closed:  # killed by close(): nothing to restart
            return ExecResult(error="the environment was closed", restarted=True)
        self._restart()
        return ExecResult(
            error=(
                f"KernelDied: the Python kernel {how}"
                + (f" (exit status {code})" if code is not None else "")
                + "; it was restarted: every variable is lost, the context is loaded again"
            ),
            duration_s=time.perf_counter() - started,
            restarted=True,
            timed_out=timed_out,
        )

    # -- the protocol --

    def _load_code(self) -> str:
        return (
            "import pickle as __p\n"
            f"with open({str(self._context_file)!r}, 'rb') as __f:\n"
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
        self._context_file = self.workdir / "context.pickle"
        with self._context_file.open("wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        self._run_quiet(self._load_code())

    def _execute(self, code: str) -> ExecResult:
        result, report = self._run(code, self.exec_limit_s(), "__polyrlm_report()")
        if report is None:
            return result
        return result.model_copy(
            update={
                "answer_ready": bool(report["ready"]),
                "answer": report["answer"] if report["ready"] else None,
                "truncated_chars": int(report["dropped"]),
            }
        )

    def _read_state(self) -> State:
        state = self._run_quiet("", "__polyrlm_state()") or []
        report = self._run_quiet("", "__polyrlm_report()") or {}
        return State(
            variables=tuple(VarInfo(**v) for v in state),
            answer=report.get("answer"),
            answer_ready=bool(report.get("ready")),
        )

    def prompt_guide(self) -> str:
        return python_guide(
            flavour="a Jupyter kernel in its own process",
            context_hint=self._hint,
            imports="numpy, pandas and the Python standard library are importable.\n",
        )
