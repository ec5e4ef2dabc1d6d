"""A fake OpenAI chat-completions and Anthropic Messages server on loopback, for tests.

It speaks both wire formats (non-streaming and really streamed SSE, tool calls, usage with
simulated prompt caching), so tests can drive litellm's real provider code end to end.

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
from dataclasses import replace
from typing import IO, Any

from aiohttp import web

from polyrlm.testing.fake_anthropic import AnthropicWire
from polyrlm.testing.fake_openai import OpenAIWire
from polyrlm.testing.fake_wire import (
    OPENAI_CACHE_MIN_TOKENS,
    STREAM_CHUNK_CHARS,
    FakeReply,
    FakeToolCall,
    Outcome,
    Responder,
    ServedCall,
    SseStream,
    Wire,
    apply_stop,
    as_reply,
    completion_tokens,
    echo_responder,
    prompt_tokens,
)

__all__ = [
    "OPENAI_CACHE_MIN_TOKENS",
    "STREAM_CHUNK_CHARS",
    "FakeOpenAIServer",
    "FakeReply",
    "FakeServerProcess",
    "FakeToolCall",
    "Responder",
    "ServedCall",
    "echo_responder",
    "main",
]

_MODEL = {"id": "fake", "object": "model", "created": 0, "owned_by": "polyrlm"}
_MODEL_LIST = json.dumps({"object": "list", "data": [_MODEL]})
_CLI_MODULE = "polyrlm.testing.fake_server"  # not __name__: that is "__main__" under -m


def _halt(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


class FakeOpenAIServer:
    """Fake OpenAI chat-completions and Anthropic Messages endpoints on loopback.

    ``responder`` (a function of the request body returning a ``str`` or a ``FakeReply``; it
    sees OpenAI-style ``messages`` for both APIs), ``latency_s`` (before each answer) and
    ``stream_delay_s`` (before each streamed event that carries content) may change live. The
    first ``fail_first`` requests fail with ``fail_status``, in the error shape of the API asked.
    Every request is recorded in ``calls``. Tokens are counted by hand-checkable rules: words
    of each message + 3; the reply's words + per tool call 1 + the words of its JSON arguments
    (at least 1).

    OpenAI: give litellm ``api_base=server.base_url`` (``.../v1``; it posts to
    ``/v1/chat/completions``). Anthropic: give litellm ``api_base=server.anthropic_base_url``
    (the bare ``http://host:port``): litellm's ``anthropic/`` provider appends ``/v1/messages``
    to any ``api_base`` whose path does not already end with it (``ensure_api_route`` in
    ``litellm.main``; not if ``LITELLM_ANTHROPIC_DISABLE_URL_SUFFIX`` is set), so
    ``server.base_url`` ends up at ``/v1/v1/messages``, which is served too, as are
    ``/v1/messages`` and ``/messages``.
    """

    def __init__(
        self,
        responder: Responder = echo_responder,
        *,
        latency_s: float = 0.0,
        fail_first: int = 0,
        fail_status: int = 429,
        stream_delay_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.responder = responder
        self.latency_s = latency_s
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.stream_delay_s = stream_delay_s
        self.host = host
        self._want_port, self._port = port, port  # _port becomes the real one once listening
        self._failures_sent = 0
        self._ids = itertools.count(1)
        self._tool_ids = itertools.count(1)
        self._openai, self._anthropic = OpenAIWire(), AnthropicWire()
        self._calls: list[ServedCall] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (ends with ``/v1``)."""
        return f"http://{self.host}:{self._port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The ``api_base`` for litellm's ``anthropic/`` models (it appends ``/v1/messages``)."""
        return f"http://{self.host}:{self._port}"

    @property
    def calls(self) -> list[ServedCall]:
        with self._lock:
            return list(self._calls)

    def wait_for_calls(self, count: int, timeout_s: float = 5.0) -> list[ServedCall]:
        """The calls once at least ``count`` are recorded (a stream is recorded at its end).

        It blocks: from inside an event loop that has just closed a stream, poll ``calls`` with
        ``await asyncio.sleep`` instead, as the client's socket only closes once the loop runs.
        """
        deadline = time.monotonic() + timeout_s
        while len(calls := self.calls) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(calls)} calls recorded, not {count}, in {timeout_s} s")
            time.sleep(0.005)
        return calls

    async def _open(self) -> web.AppRunner:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # LLM prompts can be large
        for prefix in ("/v1", ""):
            app.router.add_post(prefix + "/chat/completions", self._chat)
            app.router.add_post(prefix + "/messages", self._messages)
            app.router.add_get(prefix + "/models", self._models)
        app.router.add_post("/v1/v1/messages", self._messages)  # litellm given base_url
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

    async def _models(self, request: web.Request) -> web.Response:
        return web.Response(text=_MODEL_LIST, content_type="application/json")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._openai)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._anthropic)

    async def _serve(self, request: web.Request, wire: Wire) -> web.StreamResponse:
        headers = {name.lower(): value for name, value in request.headers.items()}
        seen = ServedCall("", [], "", 0, 0, 0, path=request.path, headers=headers)

        def error(status: int, message: str, call: ServedCall) -> web.Response:
            self._record(replace(call, status=status))
            return wire.error(status, message)

        try:
            body = json.loads(await request.read())
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
            return error(400, f"malformed JSON body: {exc}", seen)
        seen = replace(seen, body=body)
        if problem := wire.invalid(body):
            return error(400, problem, seen)
        view = wire.view(body)
        messages: list[dict[str, Any]] = view["messages"]
        seen = replace(seen, model=str(body.get("model", "fake")), messages=messages)
        await asyncio.sleep(self.latency_s)  # non-blocking so concurrent requests overlap
        with self._lock:  # count under the lock: fail exactly fail_first times, even if concurrent
            fail = self._failures_sent < self.fail_first
            self._failures_sent += fail
        if fail:
            return error(self.fail_status, "fake failure (fail_first)", seen)
        try:
            reply = as_reply(self.responder(view))
            text, stopped = apply_stop(reply.text, wire.stops(body))
            tools = () if stopped is not None else reply.tool_calls  # generation ended there
            completion = completion_tokens(text, tools)  # also checks the arguments are JSON
        except Exception as exc:
            return error(500, f"responder failed: {exc!r}", seen)
        tools = tuple(
            t if t.id else replace(t, id=f"{wire.tool_id_prefix}{next(self._tool_ids)}")
            for t in tools
        )
        cached, created = wire.account(seen.model, body, messages)
        # Hand-checkable counts: words of every message + 3 per message; words of the reply.
        call = replace(
            seen,
            reply=text,
            prompt_tokens=prompt_tokens(messages),
            completion_tokens=completion,
            status=200,
            tool_calls=tools,
            cached_tokens=cached,
            cache_creation_tokens=created,
        )
        outcome = Outcome(call, f"{wire.id_prefix}{next(self._ids)}", int(time.time()), stopped)
        if not body.get("stream"):
            self._record(call)
            return web.json_response(wire.payload(outcome))
        stream = SseStream(request, self.stream_delay_s)
        index: int | None = None

        def settle(complete: bool) -> None:  # one record per stream, updated if it breaks off
            nonlocal index
            sent = stream.sent + complete  # complete: counted before the last write
            done = replace(call, chunks_sent=sent, disconnected=not complete)
            with self._lock:
                if index is None:
                    index = len(self._calls)
                    self._calls.append(done)
                else:
                    self._calls[index] = done

        try:
            await stream.run(wire.events(outcome), on_last=lambda: settle(True))
        finally:  # also when cancelled: the record says how far it got
            if not stream.finished:
                settle(False)
        return stream.response


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
    parser.add_argument("--stream-delay", type=float, default=0.0, help="seconds between events")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        latency_s=args.latency, stream_delay_s=args.stream_delay, host=args.host, port=args.port
    )
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
