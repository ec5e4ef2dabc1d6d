"""``polyrlm mcp``: the real server process, driven by the MCP SDK's own
stdio client, its root and sub models scripted over HTTP by the fake server.

One server process serves the whole module (started once, ~2 s); its
client session lives on an event loop in a thread of its own, so the tests
stay plain functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TextIO

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import CallToolResult

from polyrlm.cli import main
from polyrlm.events import RunFinished
from polyrlm.plugins.mcp import roots as roots_module
from polyrlm.plugins.mcp.roots import PathRefused, Roots
from polyrlm.provider import message_text
from polyrlm.testing.fake_server import FakeOpenAIServer, Fault
from polyrlm.trajectory import read_trajectory

#: Seconds any one client request may take before the test fails.
REQUEST_TIMEOUT_S = 60.0
#: Root turns the server allows a run (a client may only ask for fewer).
SERVER_MAX_ITERATIONS = 3
#: The server's own ceiling on a run's seconds.
SERVER_MAX_SECONDS = 60.0
#: How long the scripted "[slow]" block sleeps.
SLOW_BLOCK_S = 1.5

NEEDLE = "4817"
SECRET = "SECRET-CONTENT-9931"

NEEDLE_CODE = """```python
text = context if isinstance(context, str) else "\\n".join(context)
line = next(l for l in text.splitlines() if "magic number" in l)
FINAL(llm_query("Extract the number: " + line).strip())
```"""


def respond(body: dict[str, Any]) -> str:
    """The root writes code by the question's tag; the sub-model extracts
    the number from the line it is given."""
    said = "\n".join(message_text(m) for m in body["messages"])
    if body["model"] == "sub":
        found = re.search(r"magic number is (\d+)", said)
        return found.group(1) if found else "none"
    if "[spin]" in said:  # never answers: only the iteration budget ends it
        return "```python\nprint('still looking')\n```"
    if "[slow]" in said:
        return f"```python\nimport time\ntime.sleep({SLOW_BLOCK_S})\nFINAL('slept')\n```"
    if "[typed]" in said:
        return "```python\nFINAL({'number': 7, 'unit': 'apples'})\n```"
    return NEEDLE_CODE


def fail_tagged(view: dict[str, Any]) -> Fault | None:
    """A provider that refuses the key for "[fail]" questions (not retried)."""
    said = "\n".join(message_text(m) for m in view["messages"])
    return Fault("status", 401, message="invalid api key") if "[fail]" in said else None


class Client:
    """An MCP client session to one ``polyrlm mcp`` process, on an event
    loop in a thread of its own; :meth:`run` runs a coroutine on it."""

    def __init__(self, params: StdioServerParameters, errlog: TextIO) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ready: Future[ClientSession] = Future()
        self._stop: asyncio.Event | None = None
        self._main = asyncio.run_coroutine_threadsafe(self._connect(params, errlog), self._loop)
        self.session = self._ready.result(timeout=REQUEST_TIMEOUT_S)

    async def _connect(self, params: StdioServerParameters, errlog: TextIO) -> None:
        try:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                self._stop = asyncio.Event()
                self._ready.set_result(session)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def run(self, make: Callable[[ClientSession], Awaitable[Any]]) -> Any:
        async def wrapped() -> Any:
            return await make(self.session)

        done = asyncio.run_coroutine_threadsafe(wrapped(), self._loop)
        return done.result(timeout=REQUEST_TIMEOUT_S)

    def call(self, tool: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        result: CallToolResult = self.run(lambda s: s.call_tool(tool, arguments or {}))
        return result

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._main.result(timeout=REQUEST_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(respond, fault_for=fail_tagged) as server:
        yield server


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``base/root`` (what the server allows) next to ``base/secret.txt``."""
    base = tmp_path_factory.mktemp("mcp")
    root = base / "root"
    root.mkdir()
    filler = [f"line {i}: nothing to see here" for i in range(400)]
    filler.insert(271, f"line 271: the magic number is {NEEDLE}")
    (root / "notes.txt").write_text("\n".join(filler) + "\n")
    (root / "docs").mkdir()
    (root / "docs" / "a.txt").write_text("an ordinary page\n")
    (root / "docs" / "b.txt").write_text("in b, the magic number is 55\n")
    (base / "secret.txt").write_text(f"the magic number is 1 and {SECRET}\n")
    (root / "link.txt").symlink_to(base / "secret.txt")
    (root / "leaky").mkdir()
    (root / "leaky" / "page.txt").write_text("harmless\n")
    (root / "leaky" / "deep").mkdir()
    (root / "leaky" / "deep" / "out.txt").symlink_to(base / "secret.txt")
    (root / "inner.txt").symlink_to(root / "notes.txt")  # a link that stays inside
    return base


@pytest.fixture(scope="module")
def logs(tree: Path) -> Path:
    return tree / "logs"


@pytest.fixture(scope="module")
def client(fake: FakeOpenAIServer, tree: Path, logs: Path) -> Iterator[Client]:
    import os

    args = [
        "-m",
        "polyrlm.cli",
        "mcp",
        "--root",
        str(tree / "root"),
        "--model",
        "openai/root",
        "--sub-model",
        "openai/sub",
        "--api-base",
        fake.base_url,
        "--api-key",
        "test-key",
        "--max-iterations",
        str(SERVER_MAX_ITERATIONS),
        "--max-seconds",
        str(SERVER_MAX_SECONDS),
        "--allow-backend",
        "python-inline",
        "--allow-backend",
        "sql",
    ]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        "POLYRLM_LOG_DIR": str(logs),  # the jsonl plugin: one trajectory per run
    }
    params = StdioServerParameters(command=sys.executable, args=args, env=env, cwd=str(tree))
    with (tree / "server.log").open("w") as errlog:
        session = Client(params, errlog)
        try:
            yield session
        finally:
            session.close()


def test_list_tools_shows_both_tools_and_their_schemas(client: Client) -> None:
    listed = client.run(lambda s: s.list_tools())
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == {"rlm_ask", "backends"}
    ask = tools["rlm_ask"].input_schema
    assert set(ask["properties"]) == {
        "question",
        "context_path",
        "text",
        "backend",
        "budget",
        "answer_schema",
    }
    assert ask["required"] == ["question"] and ask["additionalProperties"] is False
    budget = ask["$defs"]["AskBudget"]
    assert set(budget["properties"]) == {
        "max_iterations",
        "max_model_calls",
        "max_tokens",
        "max_cost_usd",
        "max_seconds",
    }
    assert budget["additionalProperties"] is False
    out = tools["rlm_ask"].output_schema
    assert out is not None and {"answer", "stop_reason", "usage", "limits"} <= set(
        out["properties"]
    )
    assert tools["backends"].input_schema["properties"] == {}
    assert tools["backends"].annotations is not None
    assert tools["backends"].annotations.read_only_hint is True


def test_rlm_ask_finds_the_needle_in_a_file_inside_the_root(
    client: Client, fake: FakeOpenAIServer, logs: Path
) -> None:
    before = len(fake.calls)
    result = client.call(
        "rlm_ask", {"question": "What is the magic number?", "context_path": "notes.txt"}
    )
    assert not result.is_error, text_of(result)
    out = result.structured_content
    assert out is not None
    assert out["answer"] == NEEDLE and out["stop_reason"] == "answered"
    assert out["backend"] == "python-inline" and out["usage"]["model_calls"] == 2
    assert text_of(result).splitlines()[0] == NEEDLE and "stop: answered" in text_of(result)
    calls = fake.calls[before:]
    roots = [c for c in calls if c.body["model"] == "root"]
    subs = [c for c in calls if c.body["model"] == "sub"]
    assert len(roots) == 1 and len(subs) == 1
    assert "magic number is 4817" in json.dumps(subs[0].body["messages"])
    assert NEEDLE not in json.dumps(roots[0].body["messages"])  # the file never was in a prompt
    assert roots[0].body["messages"] and roots[0].headers.get("authorization") == "Bearer test-key"
    trajectory = read_trajectory(logs / f"{out['run_id']}.jsonl")
    assert trajectory[0].question == "What is the magic number?"  # type: ignore[union-attr]


def test_a_directory_and_a_link_inside_the_root_and_text(client: Client, tree: Path) -> None:
    by_dir = client.call(
        "rlm_ask", {"question": "magic?", "context_path": str(tree / "root" / "docs")}
    )
    assert by_dir.structured_content is not None
    assert by_dir.structured_content["answer"] == "55"
    by_link = client.call("rlm_ask", {"question": "magic?", "context_path": "inner.txt"})
    assert by_link.structured_content is not None
    assert by_link.structured_content["answer"] == NEEDLE
    by_text = client.call("rlm_ask", {"question": "magic?", "text": "x\nthe magic number is 12\n"})
    assert by_text.structured_content is not None
    assert by_text.structured_content["answer"] == "12"


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("../secret.txt", "is outside the allowed roots"),
        ("docs/../../secret.txt", "is outside the allowed roots"),
        ("{base}/secret.txt", "is outside the allowed roots"),
        ("/etc/passwd", "is outside the allowed roots"),
        ("link.txt", "is outside the allowed roots"),
        ("leaky", "holds 'deep/out.txt', a link that leads outside the allowed roots"),
        ("missing.txt", "cannot be read: no such file or directory"),
    ],
)
def test_a_path_outside_the_roots_is_refused_and_nothing_is_read(
    client: Client, fake: FakeOpenAIServer, tree: Path, logs: Path, spec: str, why: str
) -> None:
    spec = spec.format(base=tree)
    before, logged = len(fake.calls), set(logs.glob("*.jsonl")) if logs.exists() else set()
    result = client.call("rlm_ask", {"question": "magic?", "context_path": spec})
    message = text_of(result)
    assert result.is_error and why in message, message
    assert f"allowed roots: {tree / 'root'}" in message
    assert SECRET not in message and "1 and" not in message
    assert len(fake.calls) == before  # no model saw anything
    assert (set(logs.glob("*.jsonl")) if logs.exists() else set()) == logged  # no run started


def test_a_client_budget_only_lowers_the_servers(client: Client) -> None:
    above = client.call(
        "rlm_ask",
        {
            "question": "[spin] look forever",
            "text": "abc",
            "budget": {"max_iterations": 50, "max_seconds": 1000, "max_tokens": 100_000},
        },
    )
    out = above.structured_content
    assert out is not None and not above.is_error
    assert out["clamped"] == ["max_iterations", "max_seconds"]
    assert out["limits"]["max_iterations"] == SERVER_MAX_ITERATIONS
    assert out["limits"]["max_seconds"] == SERVER_MAX_SECONDS
    assert out["limits"]["max_tokens"] == 100_000  # the server has none: the client's applies
    assert out["stop_reason"] == "max_iterations"
    # Enforced, not only reported: the limit's turns, then the one last-chance turn.
    assert out["usage"]["iterations"] == SERVER_MAX_ITERATIONS + 1
    assert "clamped to the server's limits: max_iterations, max_seconds" in text_of(above)
    below = client.call(
        "rlm_ask", {"question": "[spin] again", "text": "abc", "budget": {"max_iterations": 1}}
    )
    assert below.structured_content is not None
    assert below.structured_content["usage"]["iterations"] == 1 + 1
    assert below.structured_content["clamped"] == []


def test_backends_lists_them_and_what_clients_may_choose(client: Client) -> None:
    result = client.call("backends")
    assert not result.is_error and result.structured_content is not None
    rows = {row["name"]: row for row in result.structured_content["backends"]}
    assert rows["python-inline"] == {
        "name": "python-inline",
        "description": rows["python-inline"]["description"],
        "installed": True,
        "allowed": True,
        "default": True,
        "sandboxed": False,
        "install": None,
    }
    assert rows["sql"]["allowed"] and not rows["bash"]["allowed"]
    assert result.structured_content["default"] == "python-inline"


@pytest.mark.parametrize(
    ("arguments", "why"),
    [
        ({"question": "q", "text": "t", "backend": "nope"}, "'nope' is not a registered backend"),
        ({"question": "q", "text": "t", "backend": "bash"}, "backend 'bash' is not allowed"),
        ({"question": "q", "text": "t", "context_path": "notes.txt"}, "exactly one of"),
        ({"question": "q"}, "exactly one of"),
        ({"question": " ", "text": "t"}, "the question is empty"),
        ({"question": "q", "text": ""}, "text is empty"),
        ({"question": "q", "text": "t", "budget": {"max_iterations": 0}}, "max_iterations"),
        ({"question": "q", "text": "t", "budget": {"max_cost_usd": -1}}, "max_cost_usd"),
        ({"question": "q", "text": "t", "budget": {"model": "openai/x"}}, "budget.model"),
        ({"question": "q", "text": "t", "model": "openai/other"}, "model"),
        ({"question": "q", "text": "t", "api_base": "http://evil"}, "api_base"),
        ({"question": "q", "text": "t", "answer_schema": {"type": 5}}, "answer"),
    ],
)
def test_bad_calls_are_tool_errors_and_the_server_keeps_serving(
    client: Client, fake: FakeOpenAIServer, arguments: dict[str, Any], why: str
) -> None:
    before = len(fake.calls)
    result = client.call("rlm_ask", arguments)
    assert result.is_error and why in text_of(result), text_of(result)
    assert len(fake.calls) == before
    assert not client.call("backends").is_error  # still serving


def test_a_run_that_fails_is_a_tool_error_with_its_outcome(client: Client) -> None:
    result = client.call("rlm_ask", {"question": "[fail] anything", "text": "t"})
    assert result.is_error, text_of(result)
    out = result.structured_content
    assert out is not None and out["stop_reason"] == "error" and out["answer"] is None
    assert "invalid api key" in out["error"] and "error: " in text_of(result)
    assert not client.call("backends").is_error


def test_a_typed_answer(client: Client) -> None:
    schema = {
        "type": "object",
        "properties": {"number": {"type": "integer"}, "unit": {"type": "string"}},
        "required": ["number", "unit"],
    }
    result = client.call(
        "rlm_ask", {"question": "[typed] how many?", "text": "t", "answer_schema": schema}
    )
    assert result.structured_content is not None, text_of(result)
    assert result.structured_content["answer"] == {"number": 7, "unit": "apples"}
    assert text_of(result).splitlines()[0] == '{"number":7,"unit":"apples"}'


def test_runs_leave_the_server_responsive_and_run_side_by_side(client: Client) -> None:
    async def scenario(session: ClientSession) -> tuple[float, list[CallToolResult], float]:
        started = time.monotonic()
        asks = [
            asyncio.ensure_future(session.call_tool("rlm_ask", {"question": "[slow]", "text": "t"}))
            for _ in range(2)
        ]
        await asyncio.sleep(SLOW_BLOCK_S / 3)
        assert not any(a.done() for a in asks)
        pinged = time.monotonic()
        await session.send_ping()
        listed = await session.call_tool("backends", {})
        assert not listed.is_error
        answered = time.monotonic() - pinged
        done = await asyncio.gather(*asks)
        return answered, list(done), time.monotonic() - started

    # Warm: the first backends() imports every backend class, the first run litellm.
    assert not client.call("backends").is_error
    assert not client.call("rlm_ask", {"question": "magic?", "text": "magic number is 1"}).is_error
    answered, done, total = client.run(scenario)
    assert [r.structured_content["answer"] for r in done if r.structured_content] == ["slept"] * 2
    assert answered < SLOW_BLOCK_S / 2  # not queued behind the sleeping blocks
    assert total < 2 * SLOW_BLOCK_S  # the two runs overlapped (--max-runs 2)


def test_a_call_the_client_cancels_ends_its_run_cleanly(client: Client, logs: Path) -> None:
    before = set(logs.glob("*.jsonl"))

    def new_logs() -> set[Path]:
        return set(logs.glob("*.jsonl")) - before

    async def scenario(session: ClientSession) -> Path:
        ask = asyncio.ensure_future(
            session.call_tool("rlm_ask", {"question": "[slow] cancel me", "text": "t"})
        )
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while not (started := new_logs()):
            assert time.monotonic() < deadline and not ask.done()
            await asyncio.sleep(0.05)
        ask.cancel()  # the SDK sends notifications/cancelled
        with contextlib.suppress(asyncio.CancelledError):
            await ask
        return started.pop()

    log = client.run(scenario)
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while not (ends := [e for e in read_trajectory(log) if isinstance(e, RunFinished)]):
        assert time.monotonic() < deadline, "the cancelled run never finished"
        time.sleep(0.05)
    assert ends[0].stop_reason == "interrupted"  # cancelled mid-block, not answered
    assert not client.call("backends").is_error


def test_bad_server_options_exit_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLYRLM_MODEL", raising=False)
    for argv, why in [
        (["--root", str(tmp_path / "nope"), "-m", "x"], "bad --root"),
        (["--root", str(tmp_path)], "no model"),
        (["-m", "x", "--backend", "sql", "--allow-backend", "python-inline"], "bad --backend"),
        (["-m", "x", "--allow-backend", "nope"], "unknown backend 'nope'"),
        (["-m", "x", "--max-runs", "0"], "bad --max-runs 0"),
        (["-m", "x", "--max-cost", "-1"], "bad --max-cost"),
        (["-m", "x", "--call-timeout", "0"], "bad --call-timeout"),
    ]:
        assert main(["mcp", *argv]) == 2, argv
        assert why in capsys.readouterr().err, argv


def test_roots_refuse_loops_patterns_and_a_root_given_twice(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x.txt").write_text("x\n")
    (root / "a[1].txt").write_text("a\n")
    (root / "sub" / "a").symlink_to("b")
    (root / "sub" / "b").symlink_to("a")
    roots = Roots([root, tmp_path / "root" / ".." / "root"])
    assert roots.folders == (root.resolve(),)
    assert roots.confine("sub/x.txt") == (root / "sub" / "x.txt").resolve()
    for spec, why in [
        ("sub", "holds 'a', a link that cannot be resolved: a symlink loop"),
        (".", "holds 'sub/a', a link that cannot be resolved"),
        ("sub/a", "cannot be resolved: a symlink loop"),
        ("a[1].txt", "has a pattern character"),
        ("", "is empty"),
        ("x\0y", "holds a NUL character"),
    ]:
        with pytest.raises(PathRefused, match=re.escape(why)):
            roots.confine(spec)


def test_a_directory_too_big_to_check_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(roots_module, "DIRECTORY_CHECK_MAX_ENTRIES", 3)
    (tmp_path / "docs" / "inner").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "inner/c.txt"):
        (tmp_path / "docs" / name).write_text("x\n")
    roots = Roots([tmp_path])
    assert roots.confine("docs/inner") == (tmp_path / "docs" / "inner").resolve()
    with pytest.raises(PathRefused, match="holds more than 3 entries"):
        roots.confine("docs")  # a.txt, b.txt, inner, inner/c.txt
