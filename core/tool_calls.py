"""Running user tools on the host for one recursion tree.

:class:`ToolRunner` takes a call from an environment (a tool's name and its
arguments as JSON), validates the arguments, runs the function (in a thread
of its own, or awaited when it is a coroutine function), validates its
result, records a ``tool_called`` event and returns the result as JSON
data. In a replay the call is served from the record instead, keyed by the
tool and the digest of its arguments: the function is not called.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from polyrlm.events import Event, ToolCalled
from polyrlm.threads import in_thread
from polyrlm.tools import Tool, ToolError

__all__ = ["TOOL_BATCH_MAX", "TOOL_MAX_CONCURRENCY", "RecordedTools", "ToolRunner", "digest_of"]

#: Tool calls of one tree running at once (each holds a host thread).
TOOL_MAX_CONCURRENCY = 16
#: Calls in one batch (an SQL query's rows): more is the code's error.
TOOL_BATCH_MAX = 100_000


def digest_of(arguments: Mapping[str, Any]) -> str:
    """sha256 of the arguments' canonical JSON (what a replay is keyed by)."""
    blob = json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class RecordedTools(Protocol):
    """A record that serves tool calls (a replay's :class:`~polyrlm.replay_book.ReplayBook`)."""

    def serve_tool(self, *, run_id: str, tool: str, digest: str) -> ToolCalled:
        """The recorded call; raises :class:`~polyrlm.tools.ToolError` if there is none."""
        ...


class ToolRunner:
    """The tools of one tree, and every call made to them."""

    def __init__(
        self,
        tools: Sequence[Tool],
        emit: Callable[[Event], None],
        record: RecordedTools | None = None,
        seconds_left: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.tools = {t.name: t for t in tools}
        self.emit = emit
        self.record = record
        self.seconds_left = seconds_left
        self._ids = itertools.count(1)
        self._sem: asyncio.Semaphore | None = None

    def offered(self, depth: int) -> tuple[Tool, ...]:
        """The tools the code of a run at ``depth`` may call."""
        return tuple(t for t in self.tools.values() if depth == 0 or t.scope == "tree")

    def _find(self, name: str, depth: int) -> Tool:
        found = self.tools.get(str(name))
        if found is None or found not in self.offered(depth):
            names = ", ".join(t.name for t in self.offered(depth)) or "none"
            raise ToolError(f"there is no tool named {name!r} here (tools: {names})")
        return found

    async def call(
        self, name: str, arguments: Any, *, depth: int, run_id: str, exec_id: str | None
    ) -> Any:
        """One call; returns the result as JSON data or raises :class:`ToolError`."""
        found = self._find(name, depth)
        if not isinstance(arguments, Mapping):
            raise ToolError(f"{found.name}: arguments must be an object of named arguments")
        arguments = dict(arguments)
        digest = digest_of(arguments)
        call_id = f"t{next(self._ids)}"
        started = time.monotonic()
        result: Any = None
        error: str | None = None
        try:
            if self.record is not None:
                recorded = self.record.serve_tool(run_id=run_id, tool=found.name, digest=digest)
                result, error = recorded.result, recorded.error
            else:
                result = await self._run(found, arguments)
        except ToolError as exc:
            error = str(exc)
        except asyncio.CancelledError:
            error = "the call was cancelled (its block ended)"
            raise
        except Exception as exc:  # the user's function raised
            error = f"{found.name} raised {type(exc).__name__}: {exc}"
        finally:
            self.emit(
                ToolCalled(
                    run_id=run_id,
                    call_id=call_id,
                    exec_id=exec_id,
                    tool=found.name,
                    arguments=json.loads(json.dumps(arguments, default=str)),
                    arguments_digest=digest,
                    result=None if error else result,
                    error=error,
                    duration_s=time.monotonic() - started,
                )
            )
        if error is not None:
            raise ToolError(error)
        return result

    async def _run(self, found: Tool, arguments: dict[str, Any]) -> Any:
        if self.seconds_left() == 0:
            raise ToolError(f"{found.name}: the run is out of time")
        kwargs = found.arguments(arguments)
        fn = found.fn
        assert fn is not None  # a recorded tool is served by the record
        if self._sem is None:
            self._sem = asyncio.Semaphore(TOOL_MAX_CONCURRENCY)
        async with self._sem:
            if inspect.iscoroutinefunction(fn):
                value = await fn(**kwargs)
            else:
                value = await in_thread(lambda: fn(**kwargs))
        return found.result(value)

    async def batch(
        self, name: str, arguments: Sequence[Any], *, depth: int, run_id: str, exec_id: str | None
    ) -> list[Any]:
        """Many calls of one tool at once, results in input order; the first
        failure (by position) is raised once all have ended."""
        if len(arguments) > TOOL_BATCH_MAX:
            raise ToolError(f"{name}: at most {TOOL_BATCH_MAX} calls per batch")
        outcomes = await asyncio.gather(
            *(self.call(name, a, depth=depth, run_id=run_id, exec_id=exec_id) for a in arguments),
            return_exceptions=True,
        )
        for number, outcome in enumerate(outcomes):
            if isinstance(outcome, asyncio.CancelledError):
                raise outcome
            if isinstance(outcome, BaseException):
                raise ToolError(f"call {number + 1} of {len(arguments)}: {outcome}")
        return list(outcomes)
