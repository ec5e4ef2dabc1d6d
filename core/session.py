"""One loop's session (its environment and counters) and how a block runs in
it: the time limit and its backstop, a stuck environment replaced, the
block's :class:`~polyrlm.events.CodeExecuted`, the partial answer at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from polyrlm.answer_desk import AnswerDesk
from polyrlm.config import CLOSE_TIMEOUT_S, DEADLINE_GRACE_S
from polyrlm.environment import Environment
from polyrlm.errors import FatalError
from polyrlm.events import CodeExecuted, Event
from polyrlm.ledger import Ledger
from polyrlm.records import ExecResult
from polyrlm.subcalls import LoopSubCalls
from polyrlm.threads import bounded, in_thread

__all__ = [
    "BACKSTOP_S",
    "ENV_FAILURE_CHARS",
    "Runner",
    "Session",
    "execute_block",
    "partial_answer",
]

#: Characters of an environment's own failure (not the code's) shown to the model.
ENV_FAILURE_CHARS = 2_000

#: Seconds past the deadline after which a run still going is stopped from
#: outside; with the wait for its block to stop, the partial answer's read
#: and the closing, it has ended within :data:`~polyrlm.config.DEADLINE_GRACE_S`.
BACKSTOP_S = DEADLINE_GRACE_S - 2 * CLOSE_TIMEOUT_S


class Runner(Protocol):
    """What runs blocks (:class:`polyrlm.loop.Tree`): its ledger, its event
    sink, and how it opens an environment anew."""

    ledger: Ledger
    emit: Callable[[Event], None]

    def open_env(self, subcalls: LoopSubCalls, context: Any) -> Environment: ...


@dataclass
class Session:
    """One loop's state: its environment, calls, answer desk and counters."""

    env: Environment
    subcalls: LoopSubCalls
    answers: AnswerDesk
    context: Any
    run_id: str
    depth: int
    execs: int = 0
    #: The native run_code tool, when this root is offered it.
    tools: list[dict[str, Any]] | None = None
    #: The block running now (or last), in its thread.
    running: asyncio.Future[ExecResult] | None = None
    #: The last block that ran whole (its code, stripped) and its turn.
    last_block: tuple[str, int] | None = None
    #: What that block's run showed the model.
    last_output: str = ""
    #: The question this loop answers.
    question: str = ""
    #: The root prompt's profile in this loop ("full" or "compact").
    profile: str = "full"


async def execute_block(
    tree: Runner, s: Session, code: str, iteration: int, part: tuple[int, int, bool] | None = None
) -> ExecResult:
    """Run a block, or with ``part`` (its number, its first line, whether
    it is the last) a part of a pipelined one; the last runs as a block does."""
    s.execs += 1
    exec_id = f"{s.run_id}-e{s.execs}"
    s.subcalls.begin(exec_id)
    tree.ledger.executions += 1
    s.env.deadline = tree.ledger.deadline
    limit, grace = s.env.exec_limit_s(), s.env.config.exec_grace_s
    if limit < s.env.config.exec_timeout_s:  # the deadline bounds it: less grace
        grace = min(grace, BACKSTOP_S / 2)
    try:
        # A part keeps the block's line numbers: it is padded with blank lines.
        padded = code if part is None else "\n" * (part[1] - 1) + code
        run = s.env.execute_part if part is not None and not part[2] else s.env.execute
        s.running = asyncio.ensure_future(in_thread(run, padded))
        result = await asyncio.wait_for(asyncio.shield(s.running), limit + grace)
    except TimeoutError:
        # The environment did not interrupt itself: abandon it, start anew
        # (unless the run is out of time anyway).
        s.running = None  # nobody waits for it again
        await bounded(in_thread(s.env.close), min(CLOSE_TIMEOUT_S, grace))
        if tree.ledger.seconds_left() != 0:
            s.env = await in_thread(tree.open_env, s.subcalls, s.context)
        result = ExecResult(
            error=f"TimeoutError: the block did not stop within {limit + grace:g} s",
            timed_out=True,
            restarted=True,
        )
    except FatalError:
        raise
    except Exception as exc:  # a backend that broke on hostile code: the model's error
        text = repr(exc)[:ENV_FAILURE_CHARS]
        result = ExecResult(error=f"the environment failed on this block: {text}")
    finally:
        s.subcalls.end()  # its sub-calls still in flight are cancelled
    tree.emit(
        CodeExecuted(
            run_id=s.run_id,
            exec_id=exec_id,
            iteration=iteration,
            language=s.env.language,
            code=code,
            output=result.output,
            error=result.error,
            duration_s=result.duration_s,
            truncated_chars=result.truncated_chars,
            timed_out=result.timed_out,
            restarted=result.restarted,
            part=None if part is None else part[0],
            first_line=1 if part is None else part[1],
        )
    )
    return result


async def partial_answer(s: Session) -> Any:
    """The best partial answer: the answer content, ready or not. A block
    still running (the run was stopped) is given a moment to end first,
    its sub-calls cancelled: closing an environment under a running block
    can crash its engine (DuckDB, wasmtime)."""
    s.subcalls.end("the run has ended")
    if s.running is not None and not s.running.done():
        await bounded(asyncio.shield(s.running), CLOSE_TIMEOUT_S / 2)
    try:
        state = await asyncio.wait_for(in_thread(s.env.read_state), CLOSE_TIMEOUT_S / 2)
    except Exception:  # a dead or stuck environment has no partial answer
        return None
    return s.answers.partial(state.answer if state.answer not in ("", None) else None)
