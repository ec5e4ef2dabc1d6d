"""The live progress view: depth, iteration and llm_batch done/total."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from polyrlm import RLM
from polyrlm.cli import main
from polyrlm.events import BatchStarted, Event, ModelCalled, RunStarted
from polyrlm.plugins.progress.view import Progress
from polyrlm.testing.scripted import ScriptedModel


def shown(progress: Progress) -> str:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(progress.render())
    return out.getvalue()


def tree_run() -> tuple[Any, list[Event]]:
    def root(messages: list[dict[str, Any]]) -> str:
        if "child task" in messages[1]["content"]:
            return "```python\nFINAL('|'.join(llm_batch(['a', 'b', 'c'])))\n```"
        if len(messages) == 2:
            return "```python\nouts = llm_batch(['x'] * 5)\nprint(len(outs))\n```"
        if len(messages) == 4:
            return "```python\nkid = rlm_query('child task', context='abc')\n```"
        return "```python\nFINAL(kid)\n```"

    model, sub = ScriptedModel(root), ScriptedModel(lambda m: "ok")
    result = RLM(model.model, sub.model, max_depth=2).completion("q", "ctx")
    return result, list(result.trajectory)


def test_the_view_follows_depth_iteration_and_batches() -> None:
    result, events = tree_run()
    assert result.answer == "ok|ok|ok"
    progress = Progress(Console(file=io.StringIO(), force_terminal=True))
    assert progress.enabled
    seen = []
    for event in events:
        progress.on_event(event)
        seen.append(shown(progress))
    first_batch = next(i for i, e in enumerate(events) if isinstance(e, BatchStarted))
    assert "depth 0  iteration 1" in seen[first_batch]
    assert "llm_batch ------------------------ 0/5" in seen[first_batch]
    third = [i for i, e in enumerate(events) if isinstance(e, ModelCalled) and e.batch_id][2]
    assert " 3/5" in seen[third]
    child = next(i for i, e in enumerate(events) if isinstance(e, RunStarted) and e.depth == 1)
    assert "depth 0  iteration 2" in seen[child] and "  depth 1  iteration 0" in seen[child]
    child_batch = next(i for i in range(child, len(events)) if isinstance(events[i], BatchStarted))
    assert " 0/3" in seen[child_batch] and "depth 1  iteration 1" in seen[child_batch]
    assert "depth" not in seen[-1]  # every run finished
    assert "calls 12" in seen[-1]  # 3 + 1 root turns, 5 + 3 sub-calls


def test_live_view_draws_on_a_terminal_and_goes_away() -> None:
    out = io.StringIO()
    _, events = tree_run()
    with Progress(Console(file=out, force_terminal=True, width=100)) as progress:
        for event in events[:8]:
            progress.on_event(event)
    assert "depth 0" in out.getvalue()


def test_silent_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    _, events = tree_run()
    with Progress(Console(file=out)) as progress:
        assert not progress.enabled
        for event in events:
            progress.on_event(event)
    assert out.getvalue() == ""
    root = ScriptedModel(["```python\nFINAL(str(len(llm_batch(['a', 'b']))))\n```"])
    sub = ScriptedModel(lambda m: "ok")
    assert main(["run", "q", "--model", root.model, "--sub-model", sub.model]) == 0
    captured = capsys.readouterr()
    assert captured.out == "2\n"
    assert "llm_batch" not in captured.err and "depth" not in captured.err


def test_polyrlm_run_shows_the_view_through_the_plugin_hooks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI knows nothing of the view: the progress plugin opens it in
    command_session("run") and feeds it from on_event."""
    out = io.StringIO()
    monkeypatch.setattr(
        "polyrlm.plugins.progress.view.Console",
        lambda stderr=False: Console(file=out, force_terminal=True, width=100),
    )
    root = ScriptedModel(
        ["```python\nouts = llm_batch(['a', 'b'])\n```", "```python\nFINAL(1)\n```"]
    )
    sub = ScriptedModel(lambda m: "ok")
    assert main(["run", "q", "--model", root.model, "--sub-model", sub.model]) == 0
    assert "calls 4" in out.getvalue() and "code blocks 2" in out.getvalue()  # fed by on_event
    drawn = len(out.getvalue())
    assert main(["backends"]) == 0  # other commands: no view
    assert len(out.getvalue()) == drawn
