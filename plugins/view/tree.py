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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from polyrlm.plugins.view.nodes import NOT_FINISHED, Node, Stats, Summary, Trajectory, show

__all__ = ["TITLE_PROMPT_CHARS", "build_tree"]

#: Characters of a sub-call's prompt shown in its title.
TITLE_PROMPT_CHARS = 60


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


def _call_node(e: Mapping[str, Any]) -> Node:
    """A sub-call, titled by the head of its prompt (a batch's replies come
    back in any order, so a position would mislead)."""
    prompt = " ".join(str(e.get("prompt") or "").split())
    if len(prompt) > TITLE_PROMPT_CHARS:
        prompt = prompt[: TITLE_PROMPT_CHARS - 1] + "…"
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
    node = Node("call", f"sub-call: {prompt}", key=str(e.get("call_id", "")), flags=flags)
    node.sections = sections
    node.own = _call_stats(e)
    return node


# An item of a turn or an execution, in the order it began: ("exec", key),
# ("call", key), ("batch", key), ("run", run_id), ("answer", index) or
# ("tool", index).
Item = tuple[str, str]


@dataclass
class _Exec:
    exec_id: str
    iteration: int
    event: Mapping[str, Any] | None = None
    items: list[Item] = field(default_factory=list)


@dataclass
class _Turn:
    iteration: int
    call: Mapping[str, Any] | None = None
    started: Mapping[str, Any] | None = None
    items: list[Item] = field(default_factory=list)


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
    """Collects events by run, turn and execution (keys made unique per run)."""

    def __init__(self) -> None:
        self.runs: dict[str, _Run] = {}
        self.execs: dict[str, _Exec] = {}
        self.calls: dict[str, Mapping[str, Any]] = {}
        self.batches: dict[str, tuple[Mapping[str, Any] | None, list[str]]] = {}
        self.answers: list[Mapping[str, Any]] = []
        self.tool_calls: list[Mapping[str, Any]] = []
        self.top: list[str] = []

    def run(self, run_id: str) -> _Run:
        if run_id not in self.runs:
            self.runs[run_id] = _Run(run_id)
            self.top.append(run_id)  # until its run_started names a parent
        return self.runs[run_id]

    def turn(self, run: _Run, iteration: int) -> _Turn:
        run.current = max(run.current, iteration)
        return run.turns.setdefault(iteration, _Turn(iteration))

    def under(self, run: _Run, exec_id: Any) -> list[Item]:
        """Where an item made by ``exec_id`` goes: that execution, or the
        turn under way when it was made outside one."""
        if exec_id is None:
            return self.turn(run, run.current or 1).items
        key = f"{run.run_id}/{exec_id}"
        if key not in self.execs:
            # First seen through a sub-call: it belongs to the turn under way.
            iteration = run.current or 1
            self.execs[key] = _Exec(str(exec_id), iteration)
            self.turn(run, iteration).items.append(("exec", key))
        return self.execs[key].items

    def add(self, e: Mapping[str, Any]) -> None:
        kind = e.get("event")
        run = self.run(str(e.get("run_id", "")))
        if kind == "run_started":
            self.started(run, e)
        self.seen(run, float(e.get("ts") or 0.0))
        if kind == "turn_started":
            self.turn(run, int(e.get("iteration") or run.current + 1)).started = e
        elif kind == "model_called":
            self.called(run, e)
        elif kind == "batch_started":
            key = f"{run.run_id}/{e.get('batch_id')}"
            if key not in self.batches:
                self.batches[key] = (e, [])
                self.under(run, e.get("exec_id")).append(("batch", key))
        elif kind == "code_executed":
            self.executed(run, e)
        elif kind == "tool_called":
            self.tool_calls.append(e)
            self.under(run, e.get("exec_id")).append(("tool", str(len(self.tool_calls) - 1)))
        elif kind == "answer_set":
            self.answers.append(e)
            self.turn(run, run.current or 1).items.append(("answer", str(len(self.answers) - 1)))
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
        if parent_id is None or str(parent_id) == run.run_id or run.run_id not in self.top:
            return
        self.top.remove(run.run_id)
        parent = self.run(str(parent_id))
        if e.get("parent_exec_id") is not None:
            self.under(parent, e["parent_exec_id"]).append(("run", run.run_id))
        else:
            parent.children.append(run.run_id)

    def called(self, run: _Run, e: Mapping[str, Any]) -> None:
        key = f"{run.run_id}/{e.get('call_id')}"
        self.calls[key] = e
        if e.get("role") == "root" and e.get("exec_id") is None:
            run.root_calls += 1
            pending = run.turns.get(run.current)
            if pending is not None and pending.started is not None and pending.call is None:
                pending.call = e  # its turn_started named the turn
            else:  # no turn_started: the n-th root call is turn n
                self.turn(run, run.root_calls).call = e
            return
        items = self.under(run, e.get("exec_id"))
        if e.get("batch_id") is None:
            items.append(("call", key))
            return
        batch = f"{run.run_id}/{e['batch_id']}"
        if batch not in self.batches:  # its batch_started is missing
            self.batches[batch] = (None, [])
            items.append(("batch", batch))
        self.batches[batch][1].append(key)

    def executed(self, run: _Run, e: Mapping[str, Any]) -> None:
        self.under(run, e.get("exec_id"))
        key = f"{run.run_id}/{e.get('exec_id')}"
        ex = self.execs[key]
        ex.event = e
        iteration = int(e.get("iteration") or ex.iteration)
        if iteration != ex.iteration:  # the event's own iteration wins over the guess
            self.turn(run, ex.iteration).items.remove(("exec", key))
            self.turn(run, iteration).items.append(("exec", key))
            ex.iteration = iteration

    # -- assembly --

    def item(self, kind: str, key: str) -> Node:
        if kind == "exec":
            return self.exec_node(self.execs[key])
        if kind == "call":
            return _call_node(self.calls[key])
        if kind == "batch":
            return self.batch_node(key)
        if kind == "answer":
            e = self.answers[int(key)]
            node = Node("answer", "answer set", sections=[("answer", show(e.get("answer")))])
            if e.get("valid") is False:  # a typed run refused it
                node.title, node.flags = "answer refused", ["did not validate"]
                node.sections.append(("errors", "\n".join(map(str, e.get("errors") or ()))))
            return node
        if kind == "tool":
            return _tool_node(self.tool_calls[int(key)])
        return self.run_node(self.runs[key])

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
        node = Node("turn", f"turn {turn.iteration}")
        if turn.call is None:
            node.flags.append("no reply")
        else:
            call = _call_node(turn.call)
            node.key = call.key
            # A root call's prompt is the newest message only (the first turn's
            # question, later the observation of the previous turn).
            names = {"prompt": "prompt (newest message)", "response": "reply"}
            node.flags = call.flags
            node.sections = [(names.get(k, k), v) for k, v in call.sections]
            node.own = call.own
        node.children = [self.item(kind, key) for kind, key in turn.items]
        # The turn's time: its root call, then its code (sub-calls run inside it).
        seconds = node.own.seconds + sum(c.own.seconds for c in node.children if c.kind == "exec")
        node.own = replace(node.own, seconds=seconds)
        return node

    def exec_node(self, ex: _Exec) -> Node:
        e = ex.event
        node = Node("exec", f"execution {ex.exec_id}", key=ex.exec_id)
        if e is None:
            node.flags.append("did not finish")
        else:
            node.title = f"{e.get('language', '?')} execution"
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
        node.children = [self.item(kind, key) for kind, key in ex.items]
        return node

    def batch_node(self, key: str) -> Node:
        start, call_keys = self.batches[key]
        calls = [self.calls[c] for c in call_keys]
        size = int(start.get("size") or 0) if start else len(calls)
        title = f"llm_batch {size} prompt{'s' if size != 1 else ''}"
        node = Node("batch", title, key=key.split("/", 1)[1])
        node.children = [_call_node(c) for c in calls]
        if len(calls) < size:
            node.flags.append(f"{len(calls)} of {size} answered")
        ends = [float(c.get("ts") or 0.0) for c in calls]
        if start is not None and ends:  # wall time: from the fan-out to the last reply
            node.own = Stats(seconds=max(0.0, max(ends) - float(start.get("ts") or 0.0)))
        elif calls:
            node.own = Stats(seconds=max(float(c.get("latency_s") or 0.0) for c in calls))
        return node


def _tool_node(e: Mapping[str, Any]) -> Node:
    node = Node("tool", f"tool {e.get('tool', '?')}", key=str(e.get("call_id", "")))
    node.own = Stats(seconds=float(e.get("duration_s") or 0.0))
    node.sections = [("arguments", show(e.get("arguments")))]
    if e.get("error") is not None:
        node.flags.append("error")
        node.sections.append(("error", str(e["error"])))
    else:
        node.sections.append(("result", show(e.get("result"))))
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
