"""``bash``: the model's code runs in one persistent bash process.

One ``bash -i`` per environment (no terminal, no job control), driven over
its stdin by :class:`~polyrlm.backends.bash.shell.ShellProcess`: each block
is written to a file and sourced in the shell itself, so the working
directory, variables, functions and files persist between blocks.

* **Sandbox** (``Config.sandbox``; by default on when bubblewrap is
  installed): the shell runs under ``bwrap`` with no network, no
  capabilities, a read-only system, the context read-only, and only its
  working directory, a private ``/tmp`` and its answer folder writable
  (:mod:`polyrlm.backends.bash.sandbox`). Without bwrap the shell runs
  unsandboxed, and says so: in a logged warning, in ``polyrlm backends``, in
  the prompt guide, and in ``env.sandboxed`` (False).
* **Context** as files (:mod:`polyrlm.backends.bash.context_files`):
  ``$CONTEXT`` and ``$CONTEXT_DIR``.
* **Commands** on PATH (:mod:`polyrlm.backends.bash.scripts`): ``llm``
  (``llm --schema JSON`` for a typed reply), ``llm_batch``, ``rlm`` through
  the host bridge, ``to_json`` / ``from_json``, ``final``, which writes an
  answer file the host reads after every block (JSON text for a typed
  answer: the host decodes and checks it), and one command per user tool,
  run on the host (:mod:`polyrlm.backends.bash.tool_commands`; a tool named
  like a command the shell has is refused at start).
* **Caps** (:class:`~polyrlm.sandbox.SandboxConfig`): each process's
  address space, one file's size, ``/tmp`` (a tmpfs), and, watched from the
  host (:class:`~polyrlm.sandbox.SandboxWatch`), the sandbox's processes
  and threads and the bytes of its working directory: past a cap every
  process of the sandbox is killed and the shell restarted (past the disk
  cap, the working directory is emptied).
* **Limits**: a block past ``exec_timeout_s`` is interrupted (the shell
  aborts it, and every process it started gets SIGINT, then SIGKILL; its
  variables stay); a shell that does not stop within ``interrupt_grace_s``
  (:data:`BASH_INTERRUPT_GRACE_S`), or that exits, is restarted and the
  model told that its variables and functions are lost (files stay). Output
  is capped at ``capture_limit_chars``; the rest is read and counted.
  ``start_timeout_s`` (:data:`BASH_START_TIMEOUT_S`) bounds start-up.

A block whose status is not 0 is an error: its status and the end of its
stderr (:data:`~polyrlm.backends.bash.shell.SHELL_STDERR_TAIL_CHARS`).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from pydantic import Field, model_validator

from polyrlm.backends.bash.context_files import ContextPlan, place_context
from polyrlm.backends.bash.guide import BashGuides, bash_compact_guide, bash_guide
from polyrlm.backends.bash.reports import (
    BASH_ANSWER_MAX_BYTES,
    error_text,
    model_variables,
    read_answer_file,
    shell_names,
    work_files,
)
from polyrlm.backends.bash.sandbox import (
    HostDirs,
    bwrap_argv,
    empty_folder,
    guest_python,
    host_layout,
    sandbox_layout,
    shell_env,
    system_path,
)
from polyrlm.backends.bash.scripts import (
    ANSWER_FILE,
    COMMANDS,
    INIT_SCRIPT,
    STATE_FUNCTION,
    block_line,
    query_line,
    write_commands,
)
from polyrlm.backends.bash.shell import SHELL_STDERR_TAIL_CHARS, RunOutcome, ShellProcess
from polyrlm.backends.bash.statements import bash_ready
from polyrlm.backends.bash.tool_commands import check_tool_names
from polyrlm.bridge import Bridge
from polyrlm.environment import ContractSnippets, EnvConfig, Environment, SubCalls
from polyrlm.errors import BackendUnavailable, EnvironmentCrashed
from polyrlm.records import ExecResult, State
from polyrlm.sandbox import (
    SandboxConfig,
    SandboxFlag,
    SandboxWatch,
    choose_sandbox,
    preexec_limits,
)

__all__ = [
    "BASH_ANSWER_MAX_BYTES",
    "BASH_CONTRACT",
    "BASH_INTERRUPT_GRACE_S",
    "BASH_QUERY_OUTPUT_CHARS",
    "BASH_START_TIMEOUT_S",
    "BashEnvironment",
]

#: Seconds the shell (and its sandbox) may take to start and answer.
BASH_START_TIMEOUT_S = 10.0
#: Seconds an interrupted block may take to stop before the shell is restarted.
BASH_INTERRUPT_GRACE_S = 5.0
#: Characters of ``read_state``'s variable listing read at most.
BASH_QUERY_OUTPUT_CHARS = 1_000_000

BASH_CONTRACT = ContractSnippets(
    print_hello="echo hello",
    set_var="x=41",
    read_var="echo $((x + 1))",
    context_length='wc -m < "$CONTEXT"',
    set_answer="final 42",
    fail="echo boom >&2; false",
    llm_query="llm --no-input ping",
    llm_batch='printf \'"a"\\n"b"\\n"c"\\n\' | llm_batch | from_json | paste -sd, -',
    loop_forever="while true; do :; done",
    flood="yes | head -c 10000000",
    typed_answer="""final '{"name": "Ada", "tags": ["x", "y"], "address": {"city": "Paris"}}'""",
    wrong_typed_answer="""final '{"name": "Ada", "tags": "x"}'""",
    call_tool="""area '{"width": 6, "height": 7}' | final""",
    # sed, not jq: jq may be missing in the sandbox.
    typed_llm_query=(
        """llm --schema '{"type": "object"}' --no-input ping"""
        r""" | sed -n 's/.*"echo": *"\([^"]*\)".*/\1/p'"""
    ),
)

T = TypeVar("T")


class BashEnvironment(BashGuides, Environment):
    """A persistent bash shell, sandboxed by bubblewrap when it is installed."""

    name: ClassVar[str] = "bash"
    language: ClassVar[str] = "bash"
    fence_tags: ClassVar[tuple[str, ...]] = ("bash", "sh", "shell")
    sandboxed = SandboxFlag()
    contract: ClassVar[ContractSnippets] = BASH_CONTRACT
    # Bash runs a block command by command anyway (polyrlm.backends.bash.statements).
    pipelines_exactly: ClassVar[bool] = True
    stops_at_error: ClassVar[bool] = False

    class Config(SandboxConfig):
        """Options of the bash backend (the caps: :class:`~polyrlm.sandbox.SandboxConfig`)."""

        start_timeout_s: float = Field(
            BASH_START_TIMEOUT_S, gt=0, description="Seconds for the shell to start."
        )
        interrupt_grace_s: float = Field(
            BASH_INTERRUPT_GRACE_S,
            gt=0,
            description="Seconds a timed-out block may take to stop before a restart.",
        )

        @model_validator(mode="after")
        def _grace_below_core_grace(self) -> Self:
            if self.interrupt_grace_s >= self.exec_grace_s:
                raise ValueError(
                    f"interrupt_grace_s ({self.interrupt_grace_s:g}) must be below "
                    f"exec_grace_s ({self.exec_grace_s:g}), or the core abandons the shell first"
                )
            return self

    config: BashEnvironment.Config

    def __init__(self, subcalls: SubCalls, config: EnvConfig | None = None) -> None:
        if config is not None and not isinstance(config, self.Config):
            config = self.Config(**config.model_dump(exclude_unset=True))
        super().__init__(subcalls, config)
        self._bwrap, self.is_sandboxed = choose_sandbox(self.config.sandbox, "bash")
        tools = tuple(getattr(subcalls, "tools", ()))
        check_tool_names(tools, COMMANDS, system_path(self.is_sandboxed))
        self._closed = False
        self._shell: ShellProcess | None = None
        self._plan = ContextPlan()
        self._baseline: set[str] = set()
        self._blocks = 0
        self.dirs = HostDirs(Path(tempfile.mkdtemp(prefix="polyrlm-bash-")))
        self.bridge: Bridge | None = None
        # One thread does all the blocking work: bwrap dies with the thread
        # that started it (--die-with-parent), so that thread lives as long as us.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="polyrlm-bash")
        try:
            self.dirs.make()
            self.bridge = Bridge(self.subcalls)
            self.layout = (
                sandbox_layout() if self.is_sandboxed else host_layout(self.dirs, self.bridge.path)
            )
            write_commands(
                self.dirs.bin,
                guest_bin=self.layout.bin,
                answer_path=f"{self.layout.answer}/{ANSWER_FILE}",
                python=guest_python(self.is_sandboxed),
                tools=tools,
            )
            (self.dirs.ctl / "init.sh").write_text(INIT_SCRIPT + STATE_FUNCTION)
            self._plan = place_context("", self.dirs.context, link=not self.is_sandboxed)
        except BaseException:
            self.close()
            raise

    def _on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise EnvironmentCrashed("the bash environment is closed")
        return self._pool.submit(fn, *args).result()

    # -- the shell's life --

    def _context_paths(self) -> tuple[str, str]:
        plan = self._plan
        folder = self.layout.context if self.is_sandboxed else str(plan.root or self.dirs.context)
        return (f"{folder}/{plan.context}" if plan.context else folder), folder

    def _argv(self) -> list[str]:
        bash = shutil.which("bash") or "/bin/bash"
        shell = [os.path.realpath(bash), "--norc", "--noprofile", "--noediting", "-i", "+m"]
        if not self.is_sandboxed:
            return shell
        assert self._bwrap is not None and self.bridge is not None
        context = (self._plan.root, self._plan.binds)
        return bwrap_argv(
            self._bwrap,
            self.dirs,
            self.bridge.directory,
            context,
            self.config.disk_limit_bytes,
            shell,
        )

    def _watch(self, launcher: int) -> SandboxWatch:
        cfg = self.config
        return SandboxWatch(
            launcher,
            process_limit=cfg.process_limit,
            disk=(self.dirs.work, self.dirs.answer),
            disk_limit_bytes=cfg.disk_limit_bytes,
        )

    def _start(self) -> None:
        assert self.bridge is not None
        context, folder = self._context_paths()
        env = shell_env(
            self.layout,
            token=self.bridge.token,
            context=context,
            context_dir=folder,
            sandboxed=self.is_sandboxed,
        )
        launcher = "bwrap" if self.is_sandboxed else None
        cfg = self.config
        shell = ShellProcess(
            self._argv(),
            env,
            self.dirs.work,
            launcher,
            preexec=preexec_limits(
                cfg.memory_limit_bytes, cfg.disk_limit_bytes if self.is_sandboxed else None
            ),
            watch=self._watch if self.is_sandboxed else None,
        )
        try:
            init = shlex.quote(f"{self.layout.ctl}/init.sh")
            started = self._query(shell, f". {init}", redirect=False)
            if started.status is None:
                raise self._start_error(started)
            shell.locate_shell()
            listing = self._query(shell, "__polyrlm_state")
            if listing.status is None:
                raise self._start_error(listing)
        except BaseException:
            shell.stop()
            raise
        self._baseline = shell_names(listing.output)
        self._shell = shell

    def _start_error(self, outcome: RunOutcome) -> Exception:
        said = outcome.output.strip()[-SHELL_STDERR_TAIL_CHARS:] or "no output"
        if self.is_sandboxed:
            return BackendUnavailable(
                f"bubblewrap could not start the bash sandbox ({said}); "
                "pass sandbox=False to run the shell unsandboxed"
            )
        return EnvironmentCrashed(f"bash did not start ({said})")

    def _query(self, shell: ShellProcess, command: str, *, redirect: bool = True) -> RunOutcome:
        token = secrets.token_hex(16)
        cfg = self.config
        return shell.run(
            query_line(command, token, redirect=redirect),
            token,
            cfg.start_timeout_s,
            cfg.interrupt_grace_s,
            BASH_QUERY_OUTPUT_CHARS,
        )

    def _stop(self) -> None:
        if self._shell is not None:
            self._shell.stop()
            self._shell = None

    def _ensure(self) -> ShellProcess:
        if self._shell is None:
            self._start()
        assert self._shell is not None
        return self._shell

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._shell is not None:
                self._shell.kill_tree()  # from this thread: ends a block still running
            self._pool.submit(self._stop).result()
            self._pool.shutdown()
        if self.bridge is not None:
            self.bridge.close()
        shutil.rmtree(self.dirs.root, ignore_errors=True)

    # -- the protocol --

    def load_context(self, context: Any) -> None:
        """Place ``context`` as files and (re)start the shell on it; a shell
        already running is replaced (its variables go, its files stay)."""
        self._on_thread(self._load_context, context)

    def execute(self, code: str) -> ExecResult:
        return self._on_thread(self._execute, code)

    def read_state(self) -> State:
        return self._on_thread(self._read_state)

    def ready_statements(self, code: str) -> int:
        return bash_ready(code)

    def _load_context(self, context: Any) -> None:
        self._stop()
        self._plan = place_context(context, self.dirs.context, link=not self.is_sandboxed)
        self._start()

    def _execute(self, code: str) -> ExecResult:
        started = time.perf_counter()
        shell = self._ensure()
        self._blocks += 1
        block = self.dirs.ctl / f"block-{self._blocks}.sh"
        block.write_text(code.replace("\r\n", "\n"))
        (self.dirs.ctl / f"block-{self._blocks - 1}.sh").unlink(missing_ok=True)
        token = secrets.token_hex(16)
        cfg, limit = self.config, self.exec_limit_s()
        outcome = shell.run(
            block_line(f"{self.layout.ctl}/{block.name}", token),
            token,
            limit,
            cfg.interrupt_grace_s,
            cfg.capture_limit_chars,
        )
        tripped = shell.watch.tripped if shell.watch is not None else None
        error = error_text(outcome, limit, sandboxed=self.is_sandboxed, tripped=tripped)
        # A cap may trip after the block's own end (a fork bomb in the background).
        restarted = outcome.died or outcome.stuck or tripped is not None
        if restarted:
            self._stop()
            if tripped is not None and tripped.kind == "disk":  # or it trips again at once
                empty_folder(self.dirs.work)
                empty_folder(self.dirs.answer)
            if not self._closed:
                self._start()
        answer, problem = read_answer_file(self.dirs.answer / ANSWER_FILE)
        if problem is not None:
            error = f"{error}\n{problem}" if error else problem
        return ExecResult(
            output=outcome.output,
            error=error,
            truncated_chars=outcome.dropped_chars,
            duration_s=time.perf_counter() - started,
            answer_ready=answer is not None,
            answer=answer,
            restarted=restarted,
            timed_out=outcome.timed_out,
        )

    def _answer(self) -> str | None:
        return read_answer_file(self.dirs.answer / ANSWER_FILE)[0]

    def _read_state(self) -> State:
        shell = self._ensure()
        listing = self._query(shell, "__polyrlm_state")
        variables = model_variables(listing.output, self._baseline)
        if listing.status is None:  # it died or hung since the last block: start anew
            variables = []
            self._stop()
            self._start()
        answer = self._answer()
        return State(
            variables=(*variables, *work_files(self.dirs.work)),
            answer=answer,
            answer_ready=answer is not None,
        )

    def compact_guide(self) -> str:
        folder = not self._plan.context
        return bash_compact_guide(
            hint=self._plan.hint, context_is_folder=folder, sandboxed=self.is_sandboxed
        )

    def prompt_guide(self) -> str:
        return bash_guide(
            hint=self._plan.hint,
            context_is_folder=not self._plan.context,
            sandboxed=self.is_sandboxed,
            timeout_s=self.config.exec_timeout_s,
        )
