"""The trajectory viewer: the tree it builds, the page it writes, the CLI.

Trajectories come from real runs (``RLM`` with scripted models): a root
that fans out with ``llm_batch``, makes an ``llm_query`` and starts a child
RLM (``max_depth=2``) whose own code makes a sub-call. The browser checks
are in ``test_view_browser.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polyrlm import RLM, Result
from polyrlm.cli import main
from polyrlm.events import CodeExecuted, Event, ModelCalled, RunStarted
from polyrlm.plugins.view import Node, build_tree, embed_json, render_html, write_html
from polyrlm.testing.scripted import ScriptedModel
from polyrlm.trajectory import read_trajectory

#: Model output that would run script if the page ever parsed it as HTML.
XSS = '</script><script>window.__pwned=1;alert(1)</script><img src=x onerror="window.__pwned=2">'
QUESTION = "Which code? <img src=x onerror=alert(3)>"
BIG_CHARS = 6_000  # printed by the root's code: more than VIEW_TEXT_CHARS

FAN_OUT = f"""Fan out, then ask a child RLM.
```python
parts = llm_batch(['alpha one', 'beta two', 'gamma three'])
solo = llm_query('delta four')
kid = rlm_query('child task', context='abc def')
print(parts, solo, kid)
print({XSS!r})
print('z' * {BIG_CHARS})
```"""


def _root(messages: list[dict[str, str]]) -> str:
    turns = sum(m["role"] == "assistant" for m in messages)
    if "child task" in messages[1]["content"]:  # the child RLM at depth 1
        if turns == 0:
            return "```python\nres = llm_query('grandchild ' + context)\nprint(res)\n```"
        return "```python\nFINAL('child:' + res)\n```"
    if turns == 0:
        return FAN_OUT
    return f"```python\nFINAL(kid + ' ' + {XSS!r})\n```"


def _sub(messages: list[dict[str, str]]) -> str:
    return "seen " + messages[-1]["content"].split()[0]


def recorded_run(log: Path) -> Result:
    """A depth-2 run with a batch, a sub-call and a child RLM, logged to ``log``."""
    root, sub = ScriptedModel(_root), ScriptedModel(_sub)
    return RLM(root.model, sub.model, max_depth=2, log=log).completion(QUESTION, "ctx")


def dumps(events: Iterable[Event]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in events]


def hay(node: Node) -> str:
    """What the page's search looks in (see the script's ``hay``)."""
    return "\n".join([node.title, *node.flags, *(text for _, text in node.sections)]).lower()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    log = tmp_path_factory.mktemp("view") / "run.jsonl"
    return recorded_run(log), log


def test_child_runs_and_sub_calls_sit_under_the_exec_that_made_them(
    run: tuple[Result, Path],
) -> None:
    result, _ = run
    events = result.trajectory
    tree = build_tree(dumps(events))
    assert result.answer.startswith("child:seen grandchild")
    (root,) = tree.runs
    assert [t.title for t in root.children] == ["turn 1", "turn 2"]
    (fan_out,) = root.children[0].children
    first = next(e for e in events if isinstance(e, CodeExecuted) and e.run_id == root.key)
    assert fan_out.kind == "exec" and fan_out.key == first.exec_id
    assert [c.kind for c in fan_out.children] == ["batch", "call", "run"]
    batch, solo, child = fan_out.children
    assert batch.title == "llm_batch 3 prompts" and len(batch.children) == 3
    prompts = {text for c in batch.children for label, text in c.sections if label == "prompt"}
    assert prompts == {"alpha one", "beta two", "gamma three"}
    assert solo.title == "sub-call: delta four"
    started = {e.run_id: e for e in events if isinstance(e, RunStarted)}
    assert started[child.key].parent_exec_id == fan_out.key
    assert [t.title for t in child.children] == ["turn 1", "turn 2"]
    (grand,) = child.children[0].children[0].children
    assert grand.title == "sub-call: grandchild abc def"
    assert child.children[1].children[-1].kind == "answer"


def _parents(node: Node, parent: Node | None = None) -> Iterable[tuple[Node, Node | None]]:
    yield node, parent
    for c in node.children:
        yield from _parents(c, node)


def test_every_model_call_appears_once_under_its_own_exec(run: tuple[Result, Path]) -> None:
    result, _ = run
    calls = {e.call_id: e for e in result.trajectory if isinstance(e, ModelCalled)}
    tree = build_tree(dumps(result.trajectory))
    seen: list[str] = []
    execs = {n.key: n for r in tree.runs for n in r.walk() if n.kind == "exec"}
    for r in tree.runs:
        for node, parent in _parents(r):
            if node.kind == "call":
                seen.append(node.key)
                owner = parent if parent and parent.kind == "exec" else None
                if parent and parent.kind == "batch":
                    owner = next(x for x in execs.values() if parent in x.children)
                assert owner is not None and calls[node.key].exec_id == owner.key
            elif node.kind == "turn":
                assert calls[node.key].role == "root" and node.title.startswith("turn ")
                seen.append(node.key)
    assert sorted(seen) == sorted(calls)


def test_aggregates_add_up_to_the_run_usage(run: tuple[Result, Path]) -> None:
    result, _ = run
    tree = build_tree(dumps(result.trajectory))
    total = result.usage.total
    (summary,) = tree.summaries
    assert summary.finished and summary.stop_reason == "answered"
    assert summary.answer == result.answer
    assert (summary.stats.calls, summary.stats.prompt_tokens, summary.stats.completion_tokens) == (
        total.calls,
        total.prompt_tokens,
        total.completion_tokens,
    )
    assert summary.stats.calls == 9  # 2 + 2 root turns, 3 batch, 1 query, 1 grandchild
    for node in tree.runs[0].walk():
        below = [c.stats for c in node.children]
        assert node.stats.calls == node.own.calls + sum(s.calls for s in below)
        assert node.stats.tokens == node.own.tokens + sum(s.tokens for s in below)
        assert node.stats.seconds == node.own.seconds
    durations = {e.exec_id: e.duration_s for e in result.trajectory if isinstance(e, CodeExecuted)}
    for node in tree.runs[0].walk():
        if node.kind == "exec":
            assert node.stats.seconds == durations[node.key]
    turn = tree.runs[0].children[0]
    assert turn.stats.calls == 1 + 3 + 1 + 3  # its root call, the batch, the query, the child
    assert turn.stats.seconds >= turn.children[0].stats.seconds > 0


def test_root_turns_follow_call_order_without_turn_started(run: tuple[Result, Path]) -> None:
    result, _ = run
    events = dumps(result.trajectory)
    plain = [e for e in events if e["event"] != "turn_started"]
    a, b = build_tree(events).runs[0], build_tree(plain).runs[0]
    shape = [(n.kind, n.title, n.sections, n.stats.calls) for n in a.walk()]
    assert shape == [(n.kind, n.title, n.sections, n.stats.calls) for n in b.walk()]
    future = [*events[:3], {"event": "some_future_event", "run_id": a.key}, *events[3:]]
    assert [n.title for n in build_tree(future).runs[0].walk()] == [n.title for n in a.walk()]


def test_batch_without_batch_started_is_still_grouped(run: tuple[Result, Path]) -> None:
    result, _ = run
    events = [e for e in dumps(result.trajectory) if e["event"] != "batch_started"]
    fan_out = build_tree(events).runs[0].children[0].children[0]
    assert fan_out.children[0].title == "llm_batch 3 prompts"


def test_torn_trajectory_says_the_run_did_not_finish(
    run: tuple[Result, Path], tmp_path: Path
) -> None:
    _, log = run
    lines = log.read_text().splitlines()
    child_start = next(
        i for i, line in enumerate(lines) if '"run_started"' in line and '"depth":1' in line
    )
    torn = tmp_path / "torn.jsonl"
    torn.write_text("\n".join(lines[: child_start + 2]) + "\n" + lines[child_start + 2][:40])
    tree = build_tree(dumps(read_trajectory(torn)))
    (summary,) = tree.summaries
    assert not summary.finished and summary.stop_reason == "run did not finish"
    root = tree.runs[0]
    assert "run did not finish" in root.flags
    exec_node = root.children[0].children[0]
    assert exec_node.flags == ["did not finish"]
    assert [c.kind for c in exec_node.children] == ["batch", "call", "run"]
    assert "run did not finish" in exec_node.children[2].flags
    page = write_html(torn, tmp_path / "torn.html")
    assert '"finished":false' in page.read_text()


def test_errors_timeouts_truncation_and_failed_calls_are_flagged() -> None:
    root = ScriptedModel(
        [
            "```python\ntry:\n    llm_query('boom')\nexcept SubCallError:\n    pass\n"
            "print('q' * 5000)\n1 / 0\n```",
            "```python\nwhile True:\n    pass\n```",
            "```python\nFINAL('done')\n```",
        ]
    )
    sub = ScriptedModel(lambda m: str(1 / 0))
    config = {"exec_timeout_s": 0.3, "capture_limit_chars": 1_000}
    result = RLM(root.model, sub.model, backend_config=config).completion("q", "c")
    assert result.answer == "done"
    tree = build_tree(dumps(result.trajectory))
    first, second, _ = (turn.children[0] for turn in tree.runs[0].children)
    assert first.flags[0] == "error" and first.flags[1].startswith("truncated (")
    assert "ZeroDivisionError: division by zero" in dict(first.sections)["error"]
    (failed,) = first.children
    assert "failed" in failed.flags and "ZeroDivisionError" in dict(failed.sections)["error"]
    assert first.stats.failed == 1 and first.stats.calls == 0
    assert "timed out" in second.flags
    (summary,) = tree.summaries
    assert summary.stats.failed == result.usage.total.failed_calls == 1
    assert "(1 failed)" in tree.runs[0].to_json()["stats"]


@given(st.text(st.characters(exclude_categories=())))
def test_embedded_json_cannot_close_its_script_block(text: str) -> None:
    embedded = embed_json({"t": text})
    assert not set(embedded) & {"<", ">", "&", "\u2028", "\u2029"}
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in embedded)
    assert json.loads(embedded) == {"t": text}


def test_page_is_self_contained_and_never_holds_raw_model_markup(
    run: tuple[Result, Path],
) -> None:
    result, _ = run
    page = render_html(result.trajectory, title="a <b>title</b>")
    assert page.count("<script") == 2 and "<img" not in page and "<script>window" not in page
    assert "<title>a &lt;b&gt;title&lt;/b&gt;</title>" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for external in ("http://", "https://", "src=", "href="):
        assert external not in page.replace("\\u003cimg src=x", "")
    data = page.split('id="polyrlm-data">', 1)[1].split("</script>", 1)[0]
    parsed = json.loads(data)
    assert parsed["summaries"][0]["answer"].endswith(XSS)
    assert parsed["title"] == "a <b>title</b>"


def test_cli_view_writes_the_page_next_to_the_trajectory(
    run: tuple[Result, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, log = run
    source = tmp_path / "run.jsonl"
    source.write_bytes(log.read_bytes())
    assert main(["view", str(source)]) == 0
    assert capsys.readouterr().out.strip() == str(source.with_suffix(".html"))
    page = source.with_suffix(".html").read_text()
    assert "polyrlm run: Which code? &lt;img" in page
    out = tmp_path / "deep" / "page.html"
    assert main(["view", str(source), "-o", str(out), "--title", "mine"]) == 0
    assert "<title>mine</title>" in out.read_text()


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_cli_view_rejects_what_is_not_a_trajectory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "cannot read" in _error(["view", str(tmp_path / "missing.jsonl")], capsys)
    assert "cannot read" in _error(["view", str(tmp_path)], capsys)
    prose = tmp_path / "notes.txt"
    prose.write_text("dear diary\nnothing here\n")
    assert "is not a trajectory: Invalid JSON" in _error(["view", str(prose)], capsys)
    prose.write_text("")
    assert "holds no complete event" in _error(["view", str(prose)], capsys)
    prose.write_text('{"event": "run_started", "run_id": "x"}\n{}\n')
    assert "run_started.depth: Field required" in _error(["view", str(prose)], capsys)
    prose.write_bytes(b"\xff\xfe\x00\n\n")
    assert "not UTF-8" in _error(["view", str(prose)], capsys)
    assert "would overwrite" in _error(["view", str(prose), "-o", str(prose)], capsys)
    assert not list(tmp_path.glob("*.html"))


def test_write_html_takes_events_and_says_why_it_cannot_write(
    run: tuple[Result, Path], tmp_path: Path
) -> None:
    result, _ = run
    out = write_html(list(result.trajectory), tmp_path / "p.html")
    assert out == tmp_path / "p.html" and out.read_text().startswith("<!DOCTYPE html>")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from polyrlm.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot write"):
        write_html(result.trajectory, blocker / "p.html")


def test_a_killed_run_s_page_says_where_its_record_ends(
    run: tuple[Result, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, log = run
    lines = log.read_text().splitlines()
    keep = len(lines) // 2
    torn = tmp_path / "killed.jsonl"
    torn.write_text("".join(line + "\n" for line in lines[:keep]) + lines[keep][:25])
    assert main(["view", str(torn)]) == 0
    out, err = capsys.readouterr()
    notes = [
        f"the record ends at line {keep} (the run did not finish)",
        f"line {keep + 1} is incomplete; ignored",
    ]
    assert err.splitlines() == [f"polyrlm view: {note}" for note in notes]
    page = Path(out.strip()).read_text()
    data = json.loads(page.split('id="polyrlm-data">', 1)[1].split("</script>", 1)[0])
    assert data["notes"] == notes and data["summaries"][0]["finished"] is False
    whole = render_html(read_trajectory(log))
    assert '"notes":[]' in whole  # a finished record has nothing to say about its end
    events = read_trajectory(torn)
    assert f"the record ends at line {keep}" in render_html(events)  # events alone, too


def test_tool_calls_and_refused_answers_are_shown() -> None:
    def area(width: int, height: int) -> int:
        return width * height

    root = ScriptedModel(
        [
            "```python\nFINAL([area(2, 3)])\n```",
            "```python\nFINAL(area(6, 7))\n```",
        ]
    )
    result = RLM(root.model, tools=[area]).completion("q", "c", answer_type=int)
    assert result.answer == 42
    nodes = list(build_tree(dumps(result.trajectory)).runs[0].walk())
    tools = [n for n in nodes if n.kind == "tool"]
    assert [dict(n.sections)["result"] for n in tools] == ["6", "42"]
    assert dict(tools[0].sections)["arguments"] == json.dumps({"width": 2, "height": 3}, indent=1)
    refused = [n for n in nodes if n.title == "answer refused"]
    assert len(refused) == 1 and "is not of type 'integer'" in dict(refused[0].sections)["errors"]
    assert "tool area" in render_html(list(result.trajectory))
