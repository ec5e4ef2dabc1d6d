"""A fake OpenAI-compatible chat-completions server on loopback, for tests and benchmarks.

In-process (``FakeOpenAIServer``: a thread with its own event loop) or as a separate process
(``python -m polyrlm.testing.fake_server`` / ``FakeServerProcess``) so it does not share a GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from aiohttp import web

Responder = Callable[[dict[str, Any]], str]

_MODEL = {"id": "fake", "object": "model", "created": 0, "owned_by": "polyrlm"}
_MODEL_LIST = json.dumps({"object": "list", "data": [_MODEL]})
_ERROR_TYPES = {401: "authentication_error", 429: "rate_limit_error"}
_CLI_MODULE = "polyrlm.testing.fake_server"  # not __name__: that is "__main__" under -m


def _content_text(content: Any) -> str:  # a string, or the text parts of a list of parts
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict) and "text" in p)


def echo_responder(body: dict[str, Any]) -> str:
    """Default responder: ``"echo: "`` + the content of the last message."""
    messages = body.get("messages") or [{}]
    return "echo: " + _content_text(messages[-1].get("content"))


def _apply_stop(reply: str, stop: Any) -> str:
    # OpenAI cuts at the earliest occurrence of any stop string and drops the stop string itself.
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    hits = [i for i in (reply.find(s) for s in stops if isinstance(s, str) and s) if i >= 0]
    return reply[: min(hits)] if hits else reply


def _halt(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


@dataclass(frozen=True)
class ServedCall:
    """One request the server answered, for tests to inspect."""

    model: str
    messages: list[dict[str, Any]]
    reply: str
    prompt_tokens: int
    completion_tokens: int
    status: int


class FakeOpenAIServer:
    """Fake chat-completions endpoint; ``latency_s`` and ``responder`` may change live."""

    def __init__(
        self,
        responder: Responder = echo_responder,
        *,
        latency_s: float = 0.0,
        fail_first: int = 0,
        fail_status: int = 429,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.host = host
        self._want_port, self._port = port, port  # _port becomes the real one once listening
        self._failures_sent = 0
        self._ids = itertools.count(1)
        self._calls: list[ServedCall] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}/v1"

    @property
    def calls(self) -> list[ServedCall]:
        with self._lock:
            return list(self._calls)

    async def _open(self) -> web.AppRunner:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # LLM prompts can be large
        for prefix in ("/v1", ""):
            app.router.add_post(prefix + "/chat/completions", self._chat)
            app.router.add_get(prefix + "/models", self._models)
        # Short shutdown grace: tests stop the server often and must not wait on idle keep-alives.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._want_port, backlog=1024).start()
        except BaseException:
            await runner.cleanup()  # e.g. port in use: do not leak the runner
            raise
        self._port = int(runner.addresses[0][1])  # the real port when 0 was requested
        return runner

    def start(self) -> FakeOpenAIServer:
        """Serve from a background thread running its own event loop; returns once listening."""
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-openai-server", daemon=True)
        thread.start()
        try:
            runner = asyncio.run_coroutine_threadsafe(self._open(), loop).result()
        except BaseException:
            _halt(loop, thread)
            raise
        self._loop, self._thread, self._runner = loop, thread, runner
        return self

    def stop(self) -> None:
        with self._lock:
            loop, thread, runner = self._loop, self._thread, self._runner
            self._loop, self._thread, self._runner = None, None, None
        if loop is None or thread is None or runner is None:
            return
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
        _halt(loop, thread)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, call: ServedCall) -> None:
        with self._lock:
            self._calls.append(call)

    def _error(self, status: int, message: str, model: str, messages: list[Any]) -> web.Response:
        self._record(ServedCall(model, messages, "", 0, 0, status))
        default = "server_error" if status >= 500 else "invalid_request_error"
        kind = _ERROR_TYPES.get(status, default)
        body = {"error": {"message": message, "type": kind, "code": str(status)}}
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    async def _models(self, request: web.Request) -> web.Response:
        return web.Response(text=_MODEL_LIST, content_type="application/json")

    async def _chat(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            return self._error(400, f"malformed JSON body: {exc}", "", [])
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return self._error(400, "body must be an object with a 'messages' list", "", [])
        model = str(body.get("model", "fake"))
        await asyncio.sleep(self.latency_s)  # non-blocking so concurrent requests overlap
        with self._lock:  # count under the lock: fail exactly fail_first times, even if concurrent
            fail = self._failures_sent < self.fail_first
            self._failures_sent += fail
        if fail:
            return self._error(self.fail_status, "fake failure (fail_first)", model, messages)
        try:
            reply = _apply_stop(self.responder(body), body.get("stop"))
        except Exception as exc:
            return self._error(500, f"responder failed: {exc!r}", model, messages)
        # Hand-checkable counts: words of every message + 3 per message; words of the reply.
        prompt = sum(len(_content_text(m.get("content")).split()) + 3 for m in messages)
        completion = max(1, len(reply.split()))
        self._record(ServedCall(model, messages, reply, prompt, completion, 200))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        usage["total_tokens"] = prompt + completion
        head = {"id": f"chatcmpl-fake-{next(self._ids)}", "created": int(time.time())}
        head["model"] = model
        if body.get("stream"):
            return _sse_response(head, reply, usage)
        message = {"role": "assistant", "content": reply}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        payload = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        return web.Response(text=json.dumps(payload), content_type="application/json")


def _sse_response(head: dict[str, Any], reply: str, usage: dict[str, int]) -> web.Response:
    # The whole stream is small, so one buffered body is valid SSE and cheaper than chunked writes.
    head = {**head, "object": "chat.completion.chunk"}
    content = {"index": 0, "delta": {"role": "assistant", "content": reply}, "finish_reason": None}
    final = {"index": 0, "delta": {}, "finish_reason": "stop"}
    events = [{**head, "choices": [content]}, {**head, "choices": [final], "usage": usage}]
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return web.Response(text=text, content_type="text/event-stream")


async def _serve_forever(server: FakeOpenAIServer) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # both end the process cleanly with exit code 0
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    runner = await server._open()
    try:
        print(f"READY {server.base_url}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server (echo responder).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(latency_s=args.latency, host=args.host, port=args.port)
    asyncio.run(_serve_forever(server))
    return 0


class FakeServerProcess:
    """Runs the CLI in a subprocess; ``base_url`` is valid inside the ``with`` block."""

    def __init__(self, *, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.base_url = ""
        self.process: subprocess.Popen[str] | None = None
        self.returncode: int | None = None
        self._stderr: IO[bytes] | None = None

    def __enter__(self) -> FakeServerProcess:
        # stderr goes to a file: a pipe nobody drains could fill up and stall the server.
        self._stderr = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", _CLI_MODULE, "--latency", repr(self.latency_s)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        try:
            self.base_url = self._read_ready(self.process, timeout_s=30.0)
        except BaseException:
            self._shutdown()
            raise
        return self

    def _read_ready(self, proc: subprocess.Popen[str], timeout_s: float) -> str:
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([proc.stdout], [], [], left)[0]:
                break
            line = proc.stdout.readline()
            if not line:  # EOF: the child died before becoming ready
                raise RuntimeError(f"fake server exited early: {self._stderr_text()}")
            if line.startswith("READY "):
                return line.split(maxsplit=1)[1].strip()
        raise TimeoutError(f"fake server not READY within {timeout_s:.0f} s: {self._stderr_text()}")

    def _stderr_text(self) -> str:
        assert self._stderr is not None
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-2000:]

    def _shutdown(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        proc.terminate()
        try:
            self.returncode = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            self.returncode = proc.wait()
        for stream in (proc.stdout, self._stderr):
            if stream is not None:
                stream.close()

    def __exit__(self, *exc_info: object) -> None:
        self._shutdown()


if __name__ == "__main__":
    sys.exit(main())
