"""Shared test set-up: no network, litellm's local price list."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polyrlm.events import RunFinished, RunStarted
from polyrlm.hookspecs import hookimpl
from polyrlm.registry import plugin_manager
from polyrlm.spares import close_spares

# Before litellm is imported anywhere: it would fetch a price list otherwise.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
# No spare environments (polyrlm.spares) but in the tests of them: a spare per
# configuration, started behind each run, would cost the suite a core.
os.environ["POLYRLM_SPARES"] = "0"
for _key in ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
    os.environ.pop(_key, None)


#: Prefixes of the temporary directories backends make; none may outlive the suite.
LEAK_PREFIXES = (
    "polyrlm-kernel-",
    "polyrlm-bridge-",
    "polyrlm-bash-",
    "polyrlm-sql-",
    "polyrlm-wasm-",
    "polyrlm-llama-",
    "polyrlm-ray-",
)


def _children() -> set[int]:
    me = os.getpid()
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z" and not _tracker(stat.parent):
            out.add(int(stat.parent.name))
    return out


def _tracker(proc: Path) -> bool:
    """multiprocessing's resource tracker: one per interpreter (started by a
    batch's process pool), it lives as long as the interpreter by design."""
    try:
        return b"multiprocessing.resource_tracker" in (proc / "cmdline").read_bytes()
    except OSError:
        return False


@pytest.fixture(autouse=True, scope="session")
def no_leaked_processes_or_files() -> Iterator[None]:
    """Fails the run when a kernel, a shell or a bridge socket outlives it."""
    tmp = Path(tempfile.gettempdir())
    before = {p for p in tmp.iterdir() if p.name.startswith(LEAK_PREFIXES)}
    children = _children()
    yield
    close_spares()
    left = {p for p in tmp.iterdir() if p.name.startswith(LEAK_PREFIXES)} - before
    assert not left, f"temporary directories left behind: {sorted(map(str, left))}"
    alive = _children() - children
    assert not alive, f"child processes left running: {sorted(alive)}"


class _Recorder:
    """Keeps every event of the runs a test makes (through the on_event hook)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.active = False
        #: Replays made, and those identical step by step (not only the answer).
        self.replayed = 0
        self.identical = 0
        self.fingerprint_only = 0
        #: Test id and first divergence of replays that reproduced only the answer.
        self.diverged: list[str] = []

    @hookimpl
    def on_event(self, event: Any) -> None:
        if self.active:
            self.events.append(event)


_recorder = _Recorder()
plugin_manager().register(_recorder, name="tests-replay-recorder")


def _trees(events: list[Any]) -> list[list[Any]]:
    """The events of each finished recursion tree, in order."""
    root_of: dict[str, str] = {}
    trees: dict[str, list[Any]] = {}
    for event in events:
        if isinstance(event, RunStarted):
            parent = event.parent_run_id
            root_of[event.run_id] = event.run_id if parent is None else root_of.get(parent, "")
        root = root_of.get(event.run_id)
        if root:
            trees.setdefault(root, []).append(event)
    finished = []
    for root, tree in trees.items():
        if any(isinstance(e, RunFinished) and e.run_id == root for e in tree):
            finished.append(tree)
    return finished


@pytest.fixture(autouse=True)
def every_run_replays_to_its_answer(request: pytest.FixtureRequest) -> Iterator[None]:
    """Replays every run a test made, offline from its trajectory, and fails
    the test unless the replay reproduces the recorded answer and stop reason.
    Opt out with ``@pytest.mark.no_replay("why")``."""
    _recorder.events.clear()
    _recorder.active = True
    yield
    _recorder.active = False
    marker = request.node.get_closest_marker("no_replay")
    if marker is not None:
        assert marker.args, "no_replay needs a reason"
        return
    from polyrlm.replay import replay

    for tree in _trees(list(_recorder.events)):
        start, end = (
            tree[0],
            next(e for e in tree if isinstance(e, RunFinished) and e.run_id == tree[0].run_id),
        )
        if "value" not in (start.context_source or {}):
            _recorder.fingerprint_only += 1  # replay would need the context passed again
            continue
        result = replay(tree)
        _recorder.replayed += 1
        if result.replay is not None and result.replay.identical:
            _recorder.identical += 1
        elif result.replay is not None and result.replay.first is not None:
            first = result.replay.first
            _recorder.diverged.append(f"{request.node.nodeid}: {first.step}: {first.what}")
        assert (result.answer, result.stop_reason) == (end.answer, end.stop_reason), (
            f"the replay of {start.run_id} did not reproduce its answer:\n"
            + (result.replay.summary() if result.replay else "")
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "no_replay(reason): the runs of this test are not replayed (say why)"
    )


#: Lines tests ask to have printed after the run (e.g. the budget property
#: test's worst overshoot per budget).
SUMMARY_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in SUMMARY_LINES:
        terminalreporter.write_line(line)
    if _recorder.replayed:
        terminalreporter.write_line(
            f"replayed {_recorder.replayed} recorded runs offline: every answer reproduced; "
            f"{_recorder.identical} identical at every step; {_recorder.fingerprint_only} not "
            "replayed (context kept by fingerprint only)"
        )
        for line in _recorder.diverged:
            terminalreporter.write_line(f"  same answer, a step differs: {line}")
