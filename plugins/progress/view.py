"""A live view of a run in the terminal (rich), fed by its events.

It shows each run in progress (root and child RLMs) with its depth, its root
turn and what it waits for, the ``llm_batch`` fan-outs in flight as done /
total, and the totals so far. When the console is not a terminal it stays
silent, so piped output and logs are untouched.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from polyrlm.events import (
    BatchStarted,
    CodeExecuted,
    Event,
    ModelCalled,
    RunFinished,
    RunStarted,
    TurnStarted,
)
from polyrlm.records import Role

__all__ = ["PROGRESS_REFRESH_PER_S", "Progress"]

#: Redraws of the live view per second.
PROGRESS_REFRESH_PER_S = 8
#: Width of a batch's progress bar, in characters.
_BAR_CHARS = 24


@dataclass
class _Run:
    depth: int
    backend: str
    iteration: int = 0
    doing: str = "starting"


@dataclass
class _Batch:
    run_id: str
    size: int
    done: int = 0
    failed: int = 0


class Progress:
    """Use as a context manager and pass :meth:`on_event` to
    ``RLM(on_event=...)``. ``console`` defaults to standard error."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        #: False when the console is not a terminal: then nothing is drawn.
        self.enabled = self.console.is_terminal
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._batches: dict[str, _Batch] = {}
        self._calls = self._tokens = self._execs = 0
        self._cost = 0.0
        self._started = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._live = Live(
                get_renderable=self.render,
                console=self.console,
                refresh_per_second=PROGRESS_REFRESH_PER_S,
                transient=True,
            )
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def on_event(self, event: Event) -> None:
        """Update the view from one event (cheap; called on the run's loop)."""
        if not self.enabled:
            return
        with self._lock:
            self._apply(event)

    def _apply(self, event: Event) -> None:
        run = self._runs.get(event.run_id)
        if isinstance(event, RunStarted):
            self._runs[event.run_id] = _Run(event.depth, event.backend)
        elif isinstance(event, RunFinished):
            self._runs.pop(event.run_id, None)
            for batch_id in [b for b, v in self._batches.items() if v.run_id == event.run_id]:
                del self._batches[batch_id]
        elif isinstance(event, TurnStarted) and run is not None:
            run.iteration, run.doing = event.iteration, "waiting for the root model"
        elif isinstance(event, BatchStarted):
            self._batches[event.batch_id] = _Batch(event.run_id, event.size)
            if run is not None:
                run.doing = f"llm_batch of {event.size}"
        elif isinstance(event, ModelCalled):
            self._calls += 1
            self._tokens += event.prompt_tokens + event.completion_tokens
            self._cost += event.cost_usd or 0.0
            if event.role == Role.ROOT and run is not None:
                run.doing = "running code"
            batch = self._batches.get(event.batch_id or "")
            if batch is not None:
                batch.done += 1
                batch.failed += event.error is not None
                if batch.done >= batch.size:
                    del self._batches[event.batch_id or ""]
                    if run is not None:
                        run.doing = "running code"
        elif isinstance(event, CodeExecuted):
            self._execs += 1

    def render(self) -> RenderableType:
        """The view as it stands (also what the tests look at)."""
        with self._lock:
            elapsed = time.monotonic() - self._started
            lines = [
                Text(
                    f"polyrlm  {elapsed:6.1f} s  calls {self._calls}  tokens {self._tokens:,}  "
                    f"cost ${self._cost:.4f}  code blocks {self._execs}",
                    style="bold",
                )
            ]
            for run_id, run in sorted(self._runs.items(), key=lambda kv: kv[1].depth):
                indent = "  " * run.depth
                lines.append(
                    Text(
                        f"{indent}depth {run.depth}  iteration {run.iteration}  "
                        f"{run.backend}  {run.doing}  [{run_id}]"
                    )
                )
                for batch in self._batches.values():
                    if batch.run_id == run_id:
                        lines.append(_bar(indent + "  ", batch))
            return Group(*lines)


def _bar(indent: str, batch: _Batch) -> Text:
    filled = round(_BAR_CHARS * batch.done / batch.size) if batch.size else _BAR_CHARS
    text = Text(indent + "llm_batch ")
    text.append("#" * filled, style="green")
    text.append("-" * (_BAR_CHARS - filled), style="dim")
    failed = f" ({batch.failed} failed)" if batch.failed else ""
    text.append(f" {batch.done}/{batch.size}{failed}")
    return text
