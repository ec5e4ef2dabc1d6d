"""Pipelined turns: a block's statements run while the root is still writing it.

As the root's reply streams, the first code block in the environment's
language is followed line by line. Whenever its leading statements are
complete (:meth:`Environment.ready_statements`: a Python statement by
:mod:`ast`, an SQL statement by DuckDB's parser, a Bash command line by
``bash -n``) *and* a later line has begun that is neither blank nor a
comment (so the block does not end there), those statements run as one *part*
(:meth:`Environment.execute_part`), in order, in the same environment,
while the model writes on; their sub-calls are in flight meanwhile. When the
block closes, the rest runs as the block's last part (:meth:`Environment.execute`),
and the parts' results are joined into the one result the block gives.

Where the parts fall depends on the block's text alone, never on how the
stream was chunked or how fast it came: the same lines are checked in the
same order whether they arrive one by one, all at once (a cached or replayed
reply) or from a model that took a stop sequence. So a recorded run replays
part for part.

What can differ from running the block whole, and what happens then:

* **A later part fails to parse** (a Python syntax error, an SQL parser
  error or a refused statement further down): the parts before it have run
  and stay run; the error is the block's error, and the model is told which
  lines had already run. Run whole, nothing of the block would have run;
  that is why pipelining is on by default only for backends whose language
  runs a block statement by statement anyway (Bash: a later syntax error
  leaves the earlier commands run either way; see
  :attr:`Environment.pipelines_exactly`).
* **A part fails**: where an error ends a block (Python, SQL), no later part
  runs, as no later statement would have; where it does not (Bash), the
  next part runs, and only the last part's status is the block's.
* **The stream breaks and the broker asks again**: the new reply may differ.
  Nothing more of the first attempt runs; its parts stay run, the model is
  told exactly which lines ran, and the new reply's block runs whole.
* **Time limits** apply to each part, as to a block (``exec_timeout_s``).
* **A block that repeats the last one** is not run again (see
  :mod:`polyrlm.loop`): while the block so far is the start of the last
  block, no part of it is handed over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from polyrlm.parsing import extract_blocks, select_blocks
from polyrlm.records import ExecResult

__all__ = ["Part", "Pipeline", "join_results"]

#: Runs a part: its code, the block's line it starts at, its 1-based number,
#: and whether it is the block's last.
RunPart = Callable[[str, int, int, bool], Awaitable[ExecResult]]


@dataclass
class Part:
    """Statements of a block that ran (or run) as one unit."""

    code: str
    first_line: int
    result: ExecResult | None = None


def join_results(results: Sequence[ExecResult], separator: str = "") -> ExecResult:
    """The block's result from its parts' results, in order: outputs joined,
    the last part's error and answer, every truncation and second counted."""
    last = results[-1]
    outputs = [r.output for r in results if r.output]
    return ExecResult(
        output=separator.join(outputs),
        error=last.error,
        truncated_chars=sum(r.truncated_chars for r in results),
        duration_s=sum(r.duration_s for r in results),
        answer_ready=last.answer_ready,
        answer=last.answer,
        restarted=any(r.restarted for r in results),
        timed_out=any(r.timed_out for r in results),
    )


@dataclass
class Pipeline:
    """The pipeline of one root turn (see the module's docstring)."""

    fence_tags: tuple[str, ...]
    #: The environment's :meth:`Environment.ready_statements`.
    ready: Callable[[str], int]
    run: RunPart
    #: Whether an error in a part keeps the later parts from running.
    stops_at_error: bool = True
    separator: str = ""
    #: Starts of comment lines (:attr:`Environment.comment_prefixes`).
    comments: tuple[str, ...] = ()
    #: Whether to hold the statements back while the block so far is this
    #: prefix (the start of the block run last: it may be run again, which
    #: the loop does not do).
    holds: Callable[[str], bool] | None = None
    parts: list[Part] = field(default_factory=list)
    #: The reply so far (its complete lines), and its block's complete lines.
    _text: str = ""
    _code: str | None = None
    _open: bool = False
    _checked: int = 0
    _handed: int = 0
    _boundaries: list[int] = field(default_factory=list)
    _worker: asyncio.Task[None] | None = None
    _queue: asyncio.Queue[Part | None] | None = None
    stopped: bool = False
    #: The stream started over (a retry): nothing more of it runs.
    restarted_stream: bool = False

    # -- while the reply streams ------------------------------------------------

    def feed(self, text: str) -> None:
        """The reply so far; called as each piece of it arrives."""
        if self.restarted_stream:
            return
        if not text.startswith(self._text):  # the broker asked again
            self.restarted_stream = bool(self.parts)
            self._text, self._code, self._open = "", None, False
            self._checked = self._handed = 0
            self._boundaries.clear()
            if self.restarted_stream:
                return
        complete = text[: max(text.rfind("\n"), text.rfind("\r")) + 1]
        if len(complete) > len(self._text):
            self._text = complete
            self._block(complete)
        if self._code is not None:
            tail = text[len(self._text) :] if self._open else ""
            self._advance(self._code + tail, final=False)

    def _block(self, text: str) -> None:
        """Follow the reply's first block in this language (its complete lines,
        each with its newline). Untagged blocks are not followed: a tagged one
        further down would keep them from running at all."""
        blocks = [b for b in extract_blocks(text) if b.tag]
        runnable, _ = select_blocks(blocks, self.fence_tags)
        if runnable and runnable[0].code:
            self._code, self._open = runnable[0].code + "\n", not runnable[0].closed

    def _advance(self, code: str, *, final: bool) -> None:
        """Go on through ``code`` (the block so far, its last line perhaps not
        complete) from the first line not yet looked at: a line that begins
        with something other than blanks (or, while it streams, a fence's
        backquote) shows that the block goes on past the boundaries found so
        far, so the statements up to the last of them are handed over; each
        complete line is then checked for a new boundary."""
        while not self.stopped:
            start = self._checked
            end = code.find("\n", start)
            line = (code[start:] if end < 0 else code[start:end]).strip()
            if self._goes_on(line) and (end >= 0 or final or line[0] not in "`~"):
                self._hand_ready(code)
            if end < 0:
                return
            self._checked = end + 1
            ready = self.ready(code[: end + 1])
            if ready > max([self._handed, *self._boundaries[-1:]]):
                self._boundaries.append(ready)
                if any(map(self._goes_on, code[ready : end + 1].splitlines())):
                    self._hand_ready(code)  # Python: this line began the next statement

    def _goes_on(self, line: str) -> bool:
        """Whether ``line`` shows that the block goes on: not blank, not a comment."""
        text = line.strip()
        return bool(text) and not (self.comments and text.startswith(self.comments))

    def _hand_ready(self, code: str) -> None:
        if self._boundaries and self._boundaries[-1] > self._handed:
            go = self._boundaries[-1]
            if self.holds is not None and self.holds(code[:go]):
                return
            self._hand(code[self._handed : go], code[: self._handed].count("\n") + 1)
            self._handed = go

    def _hand(self, code: str, first_line: int) -> None:
        part = Part(code, first_line)
        self.parts.append(part)
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.ensure_future(self._work())
        self._queue.put_nowait(part)

    async def _work(self) -> None:
        assert self._queue is not None
        while (part := await self._queue.get()) is not None:
            if self.stopped:
                continue
            number = self.parts.index(part) + 1
            part.result = await self.run(part.code, part.first_line, number, False)
            if self._ends_block(part.result):
                self.stopped = True

    def _ends_block(self, result: ExecResult) -> bool:
        return result.timed_out or result.restarted or bool(self.stops_at_error and result.error)

    async def drain(self) -> None:
        """Wait for the parts handed over to finish (or be skipped)."""
        if self._worker is not None and self._queue is not None:
            self._queue.put_nowait(None)
            await asyncio.shield(self._worker)
            self._queue, self._worker = None, None

    # -- once the reply is whole --------------------------------------------------

    async def finish(self, code: str) -> tuple[ExecResult, str]:
        """The block's result, given its whole ``code``: the parts that ran
        while it streamed, the parts its remaining lines make (checked as the
        stream would have), and the rest. Returns the result and a note for
        the model ("" when the block ran as it would have whole)."""
        await self.drain()
        whole = code + "\n"
        if self.restarted_stream or not whole.startswith(self._code or ""):
            return await self._after_restart(code)
        self._advance(whole, final=True)
        await self.drain()
        results = [p.result for p in self.parts if p.result is not None]
        if self.stopped:
            return join_results(results, self.separator), ""
        rest = code[self._handed :]  # never blank: a part is handed only when more follows
        first_line = code[: self._handed].count("\n") + 1
        self.parts.append(Part(rest, first_line))
        last = await self.run(rest, first_line, len(self.parts), True)
        self.parts[-1].result = last
        note = ""
        if results and last.error:
            note = (
                f"(Lines 1-{first_line - 1} of this block had already run, statement by "
                f"statement, while you wrote it; the error above is in the rest, from line "
                f"{first_line} on.)"
            )
        return join_results([*results, last], self.separator), note

    async def _after_restart(self, whole: str) -> tuple[ExecResult, str]:
        """The block of a reply asked for again, run whole, and what the first
        attempt had run."""
        ran = [p for p in self.parts if p.result is not None]
        shown = "\n".join(p.code.rstrip("\n") for p in ran)
        self.parts.append(Part(whole, 1))
        result = await self.run(whole, 1, len(self.parts), True)
        self.parts[-1].result = result
        if not ran:
            return result, ""
        return result, (
            "(The provider's stream broke off and your reply was asked for again. Before "
            "that, these statements of the first attempt had already run, and they stay "
            f"run:\n{shown}\nThen this reply's block ran whole.)"
        )
