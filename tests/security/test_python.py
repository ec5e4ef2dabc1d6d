"""Hostile model-written Python in the ``python`` (Jupyter kernel) sandbox.

Every attack runs inside the kernel, as the model's own block would, and is
judged from the host: no canary in any output, error or answer, the host's
files unread, the listener untouched, the host alive with its memory
bounded, no process of the environment left after close, the other
environment's files and kernel unreached, and a normal block (or run)
working right after. The kernel shares its interpreter with the model's
code, so the model can rebind the helper that reports a block's result:
such a report must become the model's error, never an exception out of
``execute()``.

These tests need bubblewrap (``apt-get install bubblewrap``); CI installs it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ipykernel")

from polyrlm import RLM, Budget, StopReason
from polyrlm import sandbox as sandbox_module
from polyrlm.backends.python import kernel_io
from polyrlm.backends.python.kernel import KernelPythonEnvironment
from polyrlm.errors import ConfigError
from polyrlm.events import CodeExecuted
from polyrlm.testing.contract import EchoSubCalls
from polyrlm.testing.scripted import ScriptedModel
from tests.security.conftest import (
    Canaries,
    Seen,
    attack,
    host_alive,
    host_processes_with,
    needs_bwrap,
)

BACKEND = "python"
Config = KernelPythonEnvironment.Config
MIB = 1024**2
#: Output characters kept per block in these tests.
CAPTURE_CHARS = 100_000
#: Small caps, so that the bombs end quickly.
FAST: dict[str, Any] = {
    "sandbox": True,
    "exec_timeout_s": 4.0,
    "interrupt_grace_s": 1.0,
    "capture_limit_chars": CAPTURE_CHARS,
    "memory_limit_bytes": 2 * 1024**3,
    "process_limit": 64,
    "disk_limit_bytes": 64 * MIB,
}
#: Bytes the host's resident memory may grow by while a flood runs.
RSS_SLACK_BYTES = 160 * MIB


@pytest.fixture(autouse=True)
def _needs_bwrap() -> None:
    needs_bwrap()


class Kernel(Seen):
    """One sandboxed kernel, and every text that came out of it."""

    def json(self, code: str) -> Any:
        return json.loads(self.out(code).strip().splitlines()[-1])

    def works(self) -> bool:
        """A normal block right after: its variables, its context, its sub-calls."""
        result = self.run("print(len(context), llm_query('ping'))")
        return result.error is None and result.output.endswith("re:ping\n")


def _open(**config: Any) -> KernelPythonEnvironment:
    env = KernelPythonEnvironment(EchoSubCalls(), Config(**{**FAST, **config}))
    env.load_context("the context " + secrets.token_hex(8))
    return env


@pytest.fixture
def kernel(canaries: Canaries) -> Iterator[Kernel]:
    """A kernel opened after the canaries are planted."""
    with _open() as env:
        yield Kernel(env)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """The host's resident memory, sampled while a block runs."""

    def __init__(self) -> None:
        self.before = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.before


def test_host_secrets_memory_and_files_are_out_of_reach(kernel: Kernel, canaries: Canaries) -> None:
    # Search every /proc/<pid>/environ and the readable memory of every
    # process the kernel can see (its parent first) for the canaries.
    code = f"""
import json, os, re
found, tried = [], []
pids = [p for p in os.listdir('/proc') if p.isdigit()]
for pid in [str(os.getppid()), '1', {os.getpid()!r}, *pids]:
    for name in ('environ', 'cmdline'):
        try:
            found.append(open(f'/proc/{{pid}}/{{name}}', 'rb').read().decode(errors='replace'))
        except OSError as e:
            tried.append(type(e).__name__)
    try:
        maps = open(f'/proc/{{pid}}/maps').read().splitlines()
        with open(f'/proc/{{pid}}/mem', 'rb') as mem:
            for line in maps:
                lo, hi = (int(x, 16) for x in line.split()[0].split('-'))
                if 'r' in line.split()[1] and hi - lo < 64 << 20:
                    try:
                        mem.seek(lo); chunk = mem.read(hi - lo)
                        found += re.findall(rb'(?:sk|mem|file)-canary-[0-9a-f]{{32}}', chunk)
                    except OSError:
                        pass
    except OSError as e:
        tried.append(type(e).__name__)
for path in [{str(canaries.secret_file)!r}, '/etc/shadow', '/root/.bash_history']:
    try:
        found.append(open(path).read())
    except OSError as e:
        tried.append(type(e).__name__)
print(json.dumps({{'pids': pids, 'env': dict(os.environ), 'tried': len(tried),
                  'found': [str(f)[:200] for f in found]}}))
"""
    out = kernel.json(code)
    assert attack(BACKEND, "OPENAI_API_KEY" not in out["env"])
    assert attack(BACKEND, len(out["pids"]) <= 3)  # bwrap's init, the kernel, maybe a child
    assert attack(BACKEND, kernel.leaked(canaries) == [])
    assert canaries.secret_file.read_text() == canaries.file_secret
    assert kernel.works() and host_alive()


def test_root_only_files_and_home_folders_are_out_of_sight(kernel: Kernel) -> None:
    code = """
import json, os, sys
def attempt(fn, *a):
    try:
        return ['DONE', str(fn(*a))[:100]]
    except OSError as e:
        return ['FAILED', type(e).__name__]
print(json.dumps({'uid': [os.getuid(), os.geteuid(), os.getgid()],
  'shadow': attempt(lambda: open('/etc/shadow').read()),
  'gshadow': attempt(lambda: open('/etc/gshadow').read()),
  'root': attempt(os.listdir, '/root'), 'home': attempt(os.listdir, '/home'),
  'python': [sys.executable, os.path.realpath(sys.executable), sys.prefix, sys.base_prefix],
  'paths': [p for p in sys.path if p.startswith(('/root', '/home'))]}))
"""
    out = kernel.json(code)
    assert attack(BACKEND, out["uid"] == [1000, 1000, 1000])
    for name in ("shadow", "gshadow", "root", "home"):
        assert attack(BACKEND, out[name][0] == "FAILED"), (name, out[name])
    assert attack(BACKEND, not [p for p in out["python"] if p.startswith(("/root", "/home"))])
    assert attack(BACKEND, out["paths"] == [])
    assert kernel.works()


def test_the_network_is_cut(kernel: Kernel, canaries: Canaries) -> None:
    port, url = canaries.listener.port, canaries.listener.url
    tries = [
        f"__import__('socket').create_connection(('127.0.0.1', {port}), timeout=1)",
        f"__import__('urllib.request').request.urlopen({url!r}, timeout=1)",
        "__import__('socket').create_connection(('1.1.1.1', 80), timeout=1)",
    ]
    for action in tries:
        result = kernel.run(action)
        assert attack(BACKEND, result.error is not None and "Error" in result.error), action
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.5)
        # The sandbox's loopback is its own: the datagram never reaches the host's.
        kernel.run(
            "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
            f".sendto(b'x', ('127.0.0.1', {udp.getsockname()[1]}))"
        )
        with pytest.raises(TimeoutError):
            udp.recv(16)
        attack(BACKEND, True)
    time.sleep(0.3)  # what reached the listener has been accepted by now
    assert attack(BACKEND, canaries.listener.connections == 0 and canaries.listener.received == [])
    assert kernel.works()


def test_another_kernel_is_out_of_reach(canaries: Canaries) -> None:
    with _open() as env_a, _open() as env_b:
        a, b = Kernel(env_a), Kernel(env_b)
        b.out("secret_b = 'b-secret-" + secrets.token_hex(8) + "'")
        secret_b = b.env.read_state()
        token_b = env_b.bridge.token
        paths = [
            str(env_b.dirs.context / "context.pickle"),
            str(env_b.dirs.private / "connection.json"),
            str(env_b.dirs.channels / "connection.json"),
            str(env_b.workdir),
        ]
        code = f"""
import glob, json, os
out = {{}}
for path in {paths!r}:
    try:
        out[path] = open(path, 'rb').read().decode(errors='replace') if os.path.isfile(path) \\
            else os.listdir(path)
    except OSError as e:
        out[path] = 'FAILED ' + type(e).__name__
out['glob'] = glob.glob('/tmp/polyrlm-*') + glob.glob('/rlm/*/../../*/polyrlm-*')
tokens = []
for pid in os.listdir('/proc'):
    try:
        env = open(f'/proc/{{pid}}/environ', 'rb').read().split(b'\\0')
        tokens += [e.decode() for e in env if e.startswith(b'POLYRLM_BRIDGE_TOKEN=')]
    except OSError:
        pass
out['tokens'] = tokens
import zmq
ctx = zmq.Context()
sock = ctx.socket(zmq.DEALER)
sock.connect('ipc://{env_b.dirs.channels}/kernel-1')
sock.send_multipart([b'<IDS|MSG>', b'', b'{{}}', b'{{}}', b'{{}}', b'{{"code": "pwned = 1"}}'])
out['zmq'] = sock.poll(500)
sock.close(linger=0)
print(json.dumps(out))
"""
        out = a.json(code)
        for path in paths:
            assert attack(BACKEND, str(out[path]).startswith("FAILED")), (path, out[path])
        assert attack(BACKEND, out["glob"] == [])
        assert attack(BACKEND, token_b not in json.dumps(out["tokens"]))
        assert attack(BACKEND, out["zmq"] == 0 and "pwned" not in b.out("print(dir())"))
        assert b.env.read_state() == secret_b and a.works() and b.works()


def test_the_host_cannot_be_killed_from_inside(kernel: Kernel) -> None:
    for target in ("os.getppid()", "1", str(os.getpid()), "-1"):
        kernel.run(f"import os\ntry:\n    os.kill({target}, 9)\nexcept OSError as e:\n    print(e)")
        assert attack(BACKEND, host_alive())
    assert kernel.works()


def test_every_process_dies_with_the_environment(canaries: Canaries) -> None:
    marker = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    env = _open()
    kernel = Kernel(env)
    kernel.out(
        "import os, subprocess\n"
        f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execvp('sleep', ['sleep', '{marker}1'])\n"
    )
    time.sleep(0.3)
    assert len(host_processes_with(marker)) == 2  # they are there, seen from the host
    env.close()
    assert attack(BACKEND, host_processes_with(marker) == [])


FLOODS = {
    "display in a loop": "from IPython.display import display\n"
    "for _ in range(300):\n    display('x' * 10**6)",
    "the real stdout": "import os, sys\n"
    "for _ in range(300):\n    os.write(1, b'x' * 10**6)\nsys.__stdout__.write('y' * 10**8)",
    "a huge exception text": "raise ValueError('x' * 300_000_000)",
    "the display publisher's own method": "from ipykernel.zmqshell import ZMQDisplayPublisher\n"
    "for _ in range(200):\n"
    "    ZMQDisplayPublisher.publish(get_ipython().display_pub, {'text/plain': 'x' * 10**6})",
    "the traceback sender's own method": "from ipykernel.zmqshell import ZMQInteractiveShell\n"
    "ip = get_ipython()\n"
    "for _ in range(20):\n"
    "    ZMQInteractiveShell._showtraceback(ip, ValueError, 'x' * 10**6, ['x' * 10**7])",
}


@pytest.mark.parametrize("flood", list(FLOODS), ids=list(FLOODS))
def test_output_floods_are_capped_on_the_host(kernel: Kernel, flood: str) -> None:
    with PeakRss() as rss:
        result = kernel.run(FLOODS[flood])
    assert attack(BACKEND, len(result.output) <= CAPTURE_CHARS), len(result.output)
    assert attack(BACKEND, len(result.error or "") <= CAPTURE_CHARS + 100)
    assert attack(BACKEND, rss.growth < RSS_SLACK_BYTES), rss.growth / MIB
    assert host_alive() and kernel.works()


#: Model code that breaks or spoofs the report of its own block.
SPOOFS = {
    "rebound to a number": "__polyrlm_report = lambda: 42",
    "rebound to a wrong shape": "__polyrlm_report = lambda: type('R', (), {'__repr__': "
    'lambda s: \'{"ready": "yes", "answer": 1, "dropped": -1}\'})()',
    "deleted": "del __polyrlm_report",
    "deeply nested": "__polyrlm_report = lambda: type('R', (), {'__repr__': "
    "lambda s: '[' * 100_000 + ']' * 100_000})()",
    "a 50 MB report": "__polyrlm_report = lambda: type('R', (), {'__repr__': "
    'lambda s: \'{"ready": true, "answer": "\' + \'x\' * 50_000_000 + \'", "dropped": 0}\'})()',
    "an answer nested too deep": "__polyrlm_report = lambda: type('R', (), {'__repr__': "
    "lambda s: '{\"ready\": true, \"answer\": ' + '[' * 150 + ']' * 150 + ', \"dropped\": 0}'})()",
}


@pytest.mark.parametrize("spoof", list(SPOOFS), ids=list(SPOOFS))
def test_a_spoofed_report_is_the_models_error(
    kernel: Kernel, spoof: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel_io, "KERNEL_REPLY_TIMEOUT_S", 1.0)  # a dropped reply: quick
    with PeakRss() as rss:
        result = kernel.run(SPOOFS[spoof])
    # Read and refused, or (a frame over the host's cap) the kernel replaced.
    refused = "ReportError" in (result.error or "") or (
        result.restarted and "broke its connection" in (result.error or "")
    )
    assert attack(BACKEND, refused and not result.answer_ready), result.error
    assert attack(BACKEND, rss.growth < RSS_SLACK_BYTES), rss.growth / MIB
    assert kernel.run("FINAL(42)").answer == 42  # the helpers were restored
    assert kernel.works()


def test_a_rebound_report_in_a_run_is_an_observation() -> None:
    root = ScriptedModel(
        ["```python\n__polyrlm_report = lambda: 42\n```", "```python\nFINAL(7)\n```"]
    )
    rlm = RLM(
        root.model,
        backend="python",
        backend_config={"sandbox": True},
        budget=Budget(max_iterations=3),
    )
    result = rlm.completion("q", "ctx")
    spoofed = next(e for e in result.trajectory if isinstance(e, CodeExecuted))
    assert attack(BACKEND, "ReportError" in (spoofed.error or ""))
    assert result.stop_reason == StopReason.ANSWERED and result.answer == 7


def test_a_fork_bomb_is_stopped(kernel: Kernel) -> None:
    started = time.monotonic()
    result = kernel.run(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    )
    assert attack(BACKEND, result.restarted and "processes and threads" in (result.error or ""))
    assert time.monotonic() - started < 10 and host_alive()
    assert kernel.works()


def test_a_thread_bomb_is_stopped(kernel: Kernel) -> None:
    result = kernel.run(
        "import threading, time\n"
        "for _ in range(10_000):\n"
        "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()"
    )
    assert attack(BACKEND, result.restarted and "processes and threads" in (result.error or ""))
    assert kernel.works()


def test_memory_and_private_disk_are_capped(kernel: Kernel) -> None:
    result = kernel.run("big = bytearray(3 * 1024**3)")
    assert attack(BACKEND, "MemoryError" in (result.error or "") and not result.restarted)
    # 3 GiB to the private /tmp: a tmpfs of 64 MiB, in memory, never the host's disk.
    result = kernel.run(
        "with open('/tmp/big', 'wb') as f:\n"
        "    for _ in range(3 * 1024):\n"
        "        f.write(b'x' * 2**20)"
    )
    assert attack(
        BACKEND, "No space left" in (result.error or "") or "too large" in (result.error or "")
    )
    for target in ("/big", "/rlm/context/big", "/usr/big", "/etc/big"):
        result = kernel.run(f"open({target!r}, 'wb').write(b'x')")
        assert attack(BACKEND, result.error is not None and "Error" in result.error), target
    assert kernel.works()


def test_the_host_backed_channels_folder_is_capped(kernel: Kernel) -> None:
    channels = kernel.env.dirs.channels
    result = kernel.run(
        "import itertools\n"
        "for i in itertools.count():\n"
        "    with open(f'/rlm/channels/f{i}', 'wb') as f:\n"
        "        f.write(b'x' * (32 << 20))"
    )
    assert attack(BACKEND, result.restarted and "writable folders" in (result.error or ""))
    used = sum(p.stat().st_size for p in channels.iterdir() if p.is_file())
    assert used < 64 * MIB and kernel.works()


def test_the_sandbox_option(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert KernelPythonEnvironment.sandboxed is True  # bwrap is installed here
    with _open(sandbox=False) as env:  # knowingly on the host: said, not warned
        assert env.sandboxed is False and "NOT sandboxed" in env.prompt_guide()
        assert len(Kernel(env).json("import os, json; print(json.dumps(os.listdir('/proc')))")) > 10
    assert "NOT sandboxed" not in caplog.text
    monkeypatch.setattr(sandbox_module, "bwrap_path", lambda: None)
    monkeypatch.setattr(sandbox_module, "_warned", set())
    with pytest.raises(ConfigError, match="needs bubblewrap"):
        KernelPythonEnvironment(EchoSubCalls(), Config(sandbox=True))
    with caplog.at_level(logging.WARNING), _open(sandbox=None) as env:
        assert env.sandboxed is False and "NOT sandboxed" in env.prompt_guide()
    assert "python backend: bubblewrap (bwrap) is not installed" in caplog.text
