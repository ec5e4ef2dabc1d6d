"""The viewer's records: a node of the tree, its statistics, the summary.

Built by :func:`polyrlm.plugins.view.tree.build_tree`; serialised with ``to_json``
into the page, which shows them as they are (numbers already formatted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NOT_FINISHED", "Node", "Stats", "Summary", "Trajectory", "format_stats", "show"]

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
    """``3 calls (1 failed) · 1,234 tokens (1,000 in, 234 out) · $0.0012 · 1.23 s``;
    a node without model calls under it shows its time only."""
    seconds = f"{stats.seconds:.2f} s"
    if not stats.calls and not stats.failed:
        return seconds
    calls = f"{stats.calls} call{'s' if stats.calls != 1 else ''}"
    notes = [f"{n} {what}" for n, what in ((stats.failed, "failed"), (stats.cached, "cached")) if n]
    if notes:
        calls += f" ({', '.join(notes)})"
    tokens = (
        f"{stats.tokens:,} tokens ({stats.prompt_tokens:,} in, {stats.completion_tokens:,} out)"
    )
    cost = f"${stats.cost_usd:.4f}"
    if stats.unpriced:  # litellm does not know these models' prices
        cost += f" + {stats.unpriced} unpriced"
    return " · ".join((calls, tokens, cost, seconds))


def show(value: Any) -> str:
    """An answer or other value as text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=1, default=str)
