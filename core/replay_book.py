"""The record a replay is served from: :class:`ReplayBook` holds a
trajectory's model calls, hands them to the broker (root replies by turn,
sub-call replies by request digest), maps the replay's runs onto the
recorded ones, and compares the two step by step afterwards.
(:mod:`polyrlm.replay` rebuilds a whole run from a record.)

A record that ends early (a killed run: a run with no ``run_finished``) is
served as far as it goes: a call past its end fails (the replay stops there,
as the record does) and is not a divergence, since the record never had it.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path

from polyrlm.errors import ConfigError, ModelCallFailed
from polyrlm.events import CodeExecuted, Event, ModelCalled, RunFinished, RunStarted, ToolCalled
from polyrlm.records import REPLAY_QUOTE_CHARS, Divergence, ReplayReport, Role
from polyrlm.replay_compare import compare
from polyrlm.result import Result
from polyrlm.tools import ToolError
from polyrlm.trajectory import load_trajectory

__all__ = ["PAST_RECORD_END", "ReplayBook", "load_events"]

#: Why a call past the end of a record that ends early fails.
PAST_RECORD_END = "replay: the record ends before this call (the recorded run did not finish)"


def load_events(source: str | Path | Sequence[Event]) -> list[Event]:
    """Events from a JSONL trajectory file, or a list of events as it is."""
    events = load_trajectory(source) if isinstance(source, str | Path) else list(source)
    if not any(isinstance(e, RunStarted) and e.depth == 0 for e in events):
        raise ConfigError("the trajectory has no root run_started event")
    return events


def _quote(text: str) -> str:
    return repr(text[:REPLAY_QUOTE_CHARS])


def _exec_number(exec_id: str) -> str:
    return exec_id.rsplit("-e", 1)[-1]


class ReplayBook:
    """The recorded model calls, served to a replay; it also maps the
    replay's runs onto the recorded ones and notes where requests differ."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = list(events)
        self.root = next(e for e in self.events if isinstance(e, RunStarted) and e.depth == 0)
        self._root_calls: dict[str, list[ModelCalled]] = collections.defaultdict(list)
        self._sub_calls: dict[tuple[str, str], collections.deque[ModelCalled]] = (
            collections.defaultdict(collections.deque)
        )
        self._tool_calls: dict[tuple[str, str, str], collections.deque[ToolCalled]] = (
            collections.defaultdict(collections.deque)
        )
        self.position = {id(e): n for n, e in enumerate(self.events, 1)}
        for e in self.events:
            if isinstance(e, ToolCalled):
                self._tool_calls[(e.run_id, e.tool, e.arguments_digest)].append(e)
            if isinstance(e, ModelCalled):
                if e.role == Role.ROOT:
                    self._root_calls[e.run_id].append(e)
                else:
                    self._sub_calls[(e.run_id, e.request_digest)].append(e)
        self._children = [e for e in self.events if isinstance(e, RunStarted) and e.depth > 0]
        finished = {e.run_id for e in self.events if isinstance(e, RunFinished)}
        #: Recorded runs with no run_finished: the record stops inside them.
        self.unfinished = {e.run_id for e in self.events if isinstance(e, RunStarted)} - finished
        #: Replay runs started past the end of the record (no twin to map to).
        self._past_end: set[str] = set()
        #: Steps (code blocks) done per run: recorded, and replayed so far.
        self._recorded_steps = collections.Counter(
            e.run_id for e in self.events if isinstance(e, CodeExecuted)
        )
        self._replayed_steps: collections.Counter[str] = collections.Counter()
        #: Replay run id -> recorded run id.
        self.runs: dict[str, str] = {}
        self._served: collections.Counter[str] = collections.Counter()
        #: Divergences noticed while serving (requests that differ, calls not recorded).
        self.notes: list[Divergence] = []

    def _beyond(self, run_id: str, recorded_run: str) -> bool:
        """The replay run is past the end of its recorded twin: that run did
        not finish in the record, and the step in flight is not in it."""
        return (
            recorded_run in self.unfinished
            and self._replayed_steps[run_id] >= self._recorded_steps[recorded_run]
        )

    def observe(self, event: Event) -> None:
        """Follow the replay's events: map each new run to its recorded twin
        and count the steps each has done."""
        if isinstance(event, CodeExecuted):
            self._replayed_steps[event.run_id] += 1
        if not isinstance(event, RunStarted):
            return
        if event.depth == 0:
            self.runs[event.run_id] = self.root.run_id
            return
        parent = self.runs.get(event.parent_run_id or "")
        if event.parent_run_id in self._past_end:
            self._past_end.add(event.run_id)
        if parent is None or event.parent_exec_id is None:
            return
        want = f"{parent}-e{_exec_number(event.parent_exec_id)}"
        taken = set(self.runs.values())
        candidates = [c for c in self._children if c.parent_exec_id == want]
        candidates = [c for c in candidates if c.run_id not in taken]
        same = [
            c
            for c in candidates
            if c.question == event.question and c.context_meta == event.context_meta
        ]
        pick = same or candidates
        if pick:
            self.runs[event.run_id] = pick[0].run_id
        elif self._beyond(event.parent_run_id or "", parent):
            self._past_end.add(event.run_id)  # started where the record had stopped

    def peek(self, *, role: Role, run_id: str, digest: str) -> ModelCalled | None:
        """The call :meth:`serve` would return now, if any; nothing is used up."""
        recorded_run = self.runs.get(run_id)
        if recorded_run is None:
            return None
        if role == Role.ROOT:
            calls, turn = self._root_calls[recorded_run], self._served[recorded_run]
            return calls[turn] if turn < len(calls) else None
        pool = self._sub_calls.get((recorded_run, digest))
        return pool[0] if pool else None

    def serve(self, *, role: Role, run_id: str, digest: str, prompt: str) -> ModelCalled:
        """The recorded call that answers this request; raises
        :class:`ModelCallFailed` when the record has none."""
        recorded_run = self.runs.get(run_id)
        if recorded_run is None:
            if run_id in self._past_end:
                raise ModelCallFailed(PAST_RECORD_END)
            self._note(None, "missing", "a model call from a run that is not in the record")
            raise ModelCallFailed("replay: this run is not in the record")
        if role == Role.ROOT:
            calls = self._root_calls[recorded_run]
            turn = self._served[recorded_run]
            self._served[recorded_run] += 1
            if turn >= len(calls) and recorded_run in self.unfinished:
                raise ModelCallFailed(PAST_RECORD_END)
            if turn >= len(calls):
                self._note(
                    None,
                    "extra",
                    f"the replay asked for root turn {turn + 1}; the record has {len(calls)}",
                )
                raise ModelCallFailed("replay: the record has no more root turns for this run")
            call = calls[turn]
            if call.request_digest != digest:
                self._note(
                    call,
                    "request",
                    f"the prompt of root turn {turn + 1} differs from the recorded one: an "
                    f"earlier output or a setting changed (newest message now: {_quote(prompt)})",
                )
            return call
        pool = self._sub_calls.get((recorded_run, digest))
        if pool:
            return pool.popleft()
        if self._beyond(run_id, recorded_run):  # a step the record never finished
            raise ModelCallFailed(PAST_RECORD_END)
        self._note(
            None, "missing", f"a sub-call the record does not have: {prompt[:REPLAY_QUOTE_CHARS]!r}"
        )
        raise ModelCallFailed("replay: no recorded reply for this sub-call")

    def serve_tool(self, *, run_id: str, tool: str, digest: str) -> ToolCalled:
        """The recorded call of ``tool`` with these arguments (by their
        digest), in recorded order; raises :class:`ToolError` if there is none."""
        recorded_run = self.runs.get(run_id)
        pool = self._tool_calls.get((recorded_run or "", tool, digest))
        if pool:
            return pool.popleft()
        if recorded_run is not None and self._beyond(run_id, recorded_run):
            raise ToolError(PAST_RECORD_END)
        self._note(
            None, "missing", f"a call of tool {tool!r} the record does not have", "tool call"
        )
        raise ToolError(f"replay: no recorded call of tool {tool!r} with these arguments")

    def _note(self, event: Event | None, what: str, why: str, step: str = "model call") -> None:
        self.notes.append(
            Divergence(
                step=step,
                position=self.position.get(id(event)) if event is not None else None,
                what=what,
                why=why,
            )
        )

    def report(self, replayed: Sequence[Event], result: Result) -> ReplayReport:
        """Compare the replay's events with the record, step by step."""
        return compare(self.events, replayed, self.runs, self.notes, result)
