"""A trajectory as a tree: runs, root turns, code executions, sub-calls.

Events arrive in the order they happened, so a sub-call or a child run is
seen before the ``code_executed`` of the execution that made it (that event
is emitted when the code ends). The builder therefore collects everything
first, keyed by run, turn and execution, and assembles the tree at the end.
It works on plain event dicts, so kinds it does not know (a newer schema)
are ignored rather than fatal, and a torn trajectory (a killed run) still
gives a tree whose unfinished parts say so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Node", "Stats", "Summary", "Trajectory", "build_tree", "format_stats"]

#: Shown for a run whose ``run_finished`` event is missing.
NOT_FINISHED = "run did not finish"


@dataclass(frozen=True)
class Stats:
    """Model calls under a node (its own included) and its time."""

    calls: int = 0
    failed: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def plus(self, other: Stats) -> Stats:
        """The call counts added up; the time stays this node's own."""
        return Stats(
            calls=self.calls + other.calls,
            failed=self.failed + other.failed,
            cached=self.cached + other.cached,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced=self.unpriced + other.unpriced,
            seconds=self.seconds,
        )


@dataclass
class Node:
    """One row of the viewer: a run, turn, exec, batch, call or answer."""

    kind: str
    title: str
    key: str = ""
    flags: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    own: Stats = field(default_factory=Stats)
    #: Totals of the subtree, filled in by :func:`build_tree`.
    stats: Stats = field(default_factory=Stats)

    def walk(self) -> Iterable[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "flags": self.flags,
            "stats": format_stats(self.stats),
            "sections": [{"label": label, "text": text} for label, text in self.sections],
            "children": [child.to_json() for child in self.children],
        }


@dataclass(frozen=True)
class Summary:
    """What the top of the page says about one top-level run."""

    answer: str
    stop_reason: str
    finished: bool
    stats: Stats
    fallback: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "stop_reason": self.stop_reason,
            "finished": self.finished,
            "fallback": self.fallback,
            "error": self.error,
            "totals": format_stats(self.stats),
        }


@dataclass(frozen=True)
class Trajectory:
    """The tree of a trajectory: top-level runs and what the page shows first."""

    runs: list[Node]
    summaries: list[Summary]
    question: str = ""


def format_stats(stats: Stats) -> str:
    """``3 calls · 1,234 tokens (1,000 in, 234 out) · $0.0012 · 1.23 s``."""
    parts = [f"{stats.calls} call{'s' if stats.calls != 1 else ''}"]
    if stats.failed:
        parts[0] += f" ({stats.failed} failed)"
    if stats.cached:
        parts[0] += f" ({stats.cached} cached)"
    parts.append(
        f"{stats.tokens:,} tokens ({stats.prompt_tokens:,} in, {stats.completion_tokens:,} out)"
    )
    cost = f"${stats.cost_usd:.4f}"
    if stats.unpriced:
        cost += f" + {stats.unpriced} unpriced"
    parts.append(cost)
    parts.append(f"{stats.seconds:.2f} s")
    return " · ".join(parts)


def show(value: Any) -> str:
    """An answer or other value as text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=1, default=str)


def _call_stats(e: Mapping[str, Any]) -> Stats:
    failed = e.get("error") is not None
    cost = e.get("cost_usd")
    return Stats(
        calls=0 if failed else 1,
        failed=1 if failed else 0,
        cached=1 if e.get("cached") else 0,
        prompt_tokens=int(e.get("prompt_tokens") or 0),
        completion_tokens=int(e.get("completion_tokens") or 0),
        cost_usd=float(cost or 0.0),
        unpriced=1 if cost is None and not failed else 0,
        seconds=float(e.get("latency_s") or 0.0),
    )


def _call_node(e: Mapping[str, Any], title: str) -> Node:
    flags = [str(e.get("model", ""))]
    if e.get("cached"):
        flags.append("cached")
    if e.get("error") is not None:
        flags.append("failed")
    sections = [("prompt", str(e.get("prompt") or ""))]
    if e.get("response") is not None:
        sections.append(("response", str(e["response"])))
    if e.get("error") is not None:
        sections.append(("error", str(e["error"])))
    key = str(e.get("call_id", ""))
    return Node("call", title, key=key, flags=flags, sections=sections, own=_call_stats(e))


@dataclass
class _Exec:
    exec_id: str
    iteration: int
    event: Mapping[str, Any] | None = None
    #: Sub-calls, batches and child runs in the order they began.
    items: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Turn:
    iteration: int
    call: Mapping[str, Any] | None = None
    started: Mapping[str, Any] | None = None
    execs: list[str] = field(default_factory=list)
    extra: list[Node] = field(default_factory=list)


@dataclass
class _Run:
    run_id: str
    start: Mapping[str, Any] | None = None
    finish: Mapping[str, Any] | None = None
    turns: dict[int, _Turn] = field(default_factory=dict)
    current: int = 0
    root_calls: int = 0
    last_ts: float = 0.0
    children: list[str] = field(default_factory=list)


class _Builder:
    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}
        self.execs: dict[str, _Exec] = {}
        self.calls: dict[str, Mapping[str, Any]] = {}
        self.batches: dict[str, tuple[Mapping[str, Any] | None, list[str]]] = {}
        self.top: list[str] = []

    def run(self, run_id: str) -> _Run:
        if run_id not in self.runs:
            self.runs[run_id] = _Run(run_id)
            self.top.append(run_id)  # until its run_started says otherwise
        return self.runs[run_id]

    def turn(self, run: _Run, iteration: int) -> _Turn:
        run.current = max(run.current, iteration)
        return run.turns.setdefault(iteration, _Turn(iteration))

    def exec(self, run: _Run, exec_id: str) -> _Exec:
        if exec_id not in self.execs:
            # First seen through a sub-call: it belongs to the turn under way.
            iteration = run.current or 1
            self.execs[exec_id] = _Exec(exec_id, iteration)
            self.turn(run, iteration).execs.append(exec_id)
        return self.execs[exec_id]

    def add(self, e: Mapping[str, Any]) -> None:
        kind = e.get("event")
        run = self.run(str(e.get("run_id", "")))
        if kind == "run_started":
            self.started(run, e)
        self.seen(run, float(e.get("ts") or 0.0))
        if kind == "turn_started":
            turn = self.turn(run, int(e.get("iteration") or run.current + 1))
            turn.started = e
        elif kind == "model_called":
            self.called(run, e)
        elif kind == "batch_started":
            ex = self.exec(run, str(e.get("exec_id")))
            batch_id = str(e.get("batch_id"))
            self.batches.setdefault(batch_id, (e, []))
            ex.items.append(("batch", batch_id))
        elif kind == "code_executed":
            ex = self.exec(run, str(e.get("exec_id")))
            ex.event = e
            iteration = int(e.get("iteration") or ex.iteration)
            if iteration != ex.iteration:  # the explicit iteration wins over the guess
                self.turn(run, ex.iteration).execs.remove(ex.exec_id)
                self.turn(run, iteration).execs.append(ex.exec_id)
                ex.iteration = iteration
        elif kind == "answer_set":
            node = Node("answer", "answer set", sections=[("answer", show(e.get("answer")))])
            self.turn(run, run.current or 1).extra.append(node)
        elif kind == "run_finished":
            run.finish = e

    def seen(self, run: _Run, ts: float) -> None:
        """An unfinished run lasts until the last event under it."""
        chain: set[str] = set()
        while run.run_id not in chain:
            chain.add(run.run_id)
            run.last_ts = max(run.last_ts, ts)
            parent = (run.start or {}).get("parent_run_id")
            if parent is None or str(parent) not in self.runs:
                break
            run = self.runs[str(parent)]

    def started(self, run: _Run, e: Mapping[str, Any]) -> None:
        run.start = e
        parent_id = e.get("parent_run_id")
        if parent_id is None:
            return
        self.top.remove(run.run_id)
        parent = self.run(str(parent_id))
        if e.get("parent_exec_id") is not None:
            self.exec(parent, str(e["parent_exec_id"])).items.append(("run", run.run_id))
        else:
            parent.children.append(run.run_id)

    def called(self, run: _Run, e: Mapping[str, Any]) -> None:
        call_id = str(e.get("call_id"))
        self.calls[call_id] = e
        if e.get("role") == "root" and e.get("exec_id") is None:
            run.root_calls += 1
            pending = run.turns.get(run.current)
            if pending is not None and pending.started is not None and pending.call is None:
                pending.call = e  # the turn_started event named this turn
            else:
                self.turn(run, run.root_calls).call = e
            return
        if e.get("exec_id") is None:  # a sub-call made outside an execution
            node = _call_node(e, "sub-call")
            self.turn(run, run.current or 1).extra.append(node)
            return
        ex = self.exec(run, str(e["exec_id"]))
        batch_id = e.get("batch_id")
        if batch_id is None:
            ex.items.append(("call", call_id))
            return
        if str(batch_id) not in self.batches:  # its batch_started is missing
            self.batches[str(batch_id)] = (None, [])
            ex.items.append(("batch", str(batch_id)))
        self.batches[str(batch_id)][1].append(call_id)

    # -- assembly --

    def run_node(self, run: _Run) -> Node:
        s = run.start or {}
        title = f"run {run.run_id} · depth {s.get('depth', '?')}"
        flags = [str(s.get("backend", "?")), str(s.get("model", "?"))]
        sections = [("question", str(s.get("question", "")))] if run.start else []
        if run.start is None:
            flags.append("no run_started event")
        f = run.finish
        if f is None:
            flags.append(NOT_FINISHED)
        else:
            flags.append(str(f.get("stop_reason")))
            if f.get("fallback"):
                flags.append("fallback answer")
            sections.append(("answer", show(f.get("answer"))))
            if f.get("error"):
                sections.append(("error", str(f["error"])))
        begin = float(s.get("ts") or run.last_ts)
        end = float(f.get("ts") or run.last_ts) if f else run.last_ts
        node = Node("run", title, key=run.run_id, flags=flags, sections=sections)
        node.own = Stats(seconds=max(0.0, end - begin))
        node.children = [self.turn_node(run.turns[i]) for i in sorted(run.turns)]
        node.children += [self.run_node(self.runs[c]) for c in run.children]
        return node

    def turn_node(self, turn: _Turn) -> Node:
        node = Node("turn", f"turn {turn.iteration}", key=str(turn.iteration))
        seconds = 0.0
        if turn.call is None:
            node.flags.append("no reply")
        else:
            call = _call_node(turn.call, "root call")
            node.flags = call.flags
            # A root call's prompt is the newest message only (the first turn's
            # question, later the observation of the previous turn).
            names = {"prompt": "prompt (newest message)", "response": "reply"}
            node.sections = [(names.get(k, k), v) for k, v in call.sections]
            node.own = call.own
            seconds = call.own.seconds
        for exec_id in turn.execs:
            child = self.exec_node(self.execs[exec_id])
            node.children.append(child)
            seconds += child.own.seconds
        node.children += turn.extra
        node.own = replace(node.own, seconds=seconds)
        return node

    def exec_node(self, ex: _Exec) -> Node:
        e = ex.event
        if e is None:
            node = Node("exec", f"execution {ex.exec_id}", key=ex.exec_id, flags=["did not finish"])
        else:
            node = Node("exec", f"{e.get('language', '?')} execution", key=ex.exec_id)
            node.own = Stats(seconds=float(e.get("duration_s") or 0.0))
            node.sections = [("code", str(e.get("code", ""))), ("output", str(e.get("output", "")))]
            if e.get("error") is not None:
                node.flags.append("error")
                node.sections.append(("error", str(e["error"])))
            for flag in ("timed_out", "restarted"):
                if e.get(flag):
                    node.flags.append(flag.replace("_", " "))
            if e.get("truncated_chars"):
                node.flags.append(f"truncated ({e['truncated_chars']:,} chars dropped)")
        for kind, item_id in ex.items:
            if kind == "call":
                node.children.append(_call_node(self.calls[item_id], "sub-call"))
            elif kind == "batch":
                node.children.append(self.batch_node(item_id))
            else:
                node.children.append(self.run_node(self.runs[item_id]))
        return node

    def batch_node(self, batch_id: str) -> Node:
        start, call_ids = self.batches[batch_id]
        calls = [self.calls[c] for c in call_ids]
        size = int(start.get("size") or 0) if start else len(calls)
        node = Node("batch", f"llm_batch {size} prompt{'s' if size != 1 else ''}", key=batch_id)
        node.children = [_call_node(c, f"prompt {i}") for i, c in enumerate(calls, 1)]
        if len(calls) < size:
            node.flags.append(f"{len(calls)} of {size} answered")
        ends = [float(c.get("ts") or 0.0) for c in calls]
        if start is not None and ends:
            node.own = Stats(seconds=max(0.0, max(ends) - float(start.get("ts") or 0.0)))
        elif calls:
            node.own = Stats(seconds=max(float(c.get("latency_s") or 0.0) for c in calls))
        return node


def _total(node: Node) -> Stats:
    stats = node.own
    for child in node.children:
        stats = stats.plus(_total(child))
    node.stats = stats
    return stats


def build_tree(events: Iterable[Mapping[str, Any]]) -> Trajectory:
    """The tree of ``events`` (event dicts, as in a JSONL trajectory)."""
    builder = _Builder()
    for e in events:
        builder.add(e)
    runs = [builder.run_node(builder.runs[r]) for r in builder.top]
    summaries = []
    for run_id, node in zip(builder.top, runs, strict=True):
        _total(node)
        finish = builder.runs[run_id].finish
        summaries.append(
            Summary(
                answer=show(finish.get("answer")) if finish else "",
                stop_reason=str(finish.get("stop_reason")) if finish else NOT_FINISHED,
                finished=finish is not None,
                stats=node.stats,
                fallback=bool(finish.get("fallback")) if finish else False,
                error=str(finish["error"]) if finish and finish.get("error") else None,
            )
        )
    first = builder.runs[builder.top[0]].start if builder.top else None
    return Trajectory(runs, summaries, str(first.get("question", "")) if first else "")
