"""A fake OpenAI chat-completions and Anthropic Messages server on loopback, for tests.

It speaks both wire formats (non-streaming and really streamed SSE, tool calls, usage with
simulated prompt caching), so tests can drive litellm's real provider code end to end.

In-process (``FakeOpenAIServer``: a thread with its own event loop) or as a separate process
(``python -m polyrlm.testing.fake_server`` / ``FakeServerProcess``) so it does not share a GIL.
The command's flags mirror the server's options: ``--latency S``, ``--stream-delay S``,
``--window-tokens N``, ``--usage-factor F``, ``--extra-usage-tokens N`` and ``--fault SPEC``
(repeatable, served in order, one per request; SPEC is ``MODE[:STATUS][:KEY=VALUE]...`` as
``Fault.parse`` reads it, e.g. ``--fault status:429:retry-after=5 --fault hang``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from aiohttp import web

from polyrlm.testing.fake_anthropic import AnthropicWire
from polyrlm.testing.fake_faults import (
    EARLY_MODES,
    FAULT_MODES,
    LATE_MODES,
    Fault,
    serve_early,
    serve_late,
)
from polyrlm.testing.fake_openai import OpenAIWire
from polyrlm.testing.fake_process import FakeServerProcess
from polyrlm.testing.fake_wire import (
    OPENAI_CACHE_MIN_TOKENS,
    STREAM_CHUNK_CHARS,
    FakeReply,
    FakeToolCall,
    Outcome,
    Responder,
    ServedCall,
    Wire,
    apply_stop,
    as_reply,
    completion_tokens,
    echo_responder,
    prompt_tokens,
    stream_out,
    truncate,
)

__all__ = [
    "FAULT_MODES",
    "OPENAI_CACHE_MIN_TOKENS",
    "STREAM_CHUNK_CHARS",
    "FakeOpenAIServer",
    "FakeReply",
    "FakeServerProcess",
    "FakeToolCall",
    "Fault",
    "FaultPicker",
    "Responder",
    "ServedCall",
    "echo_responder",
    "main",
]

#: A function of the request (as the responder sees it) returning the fault to serve, if any;
#: asked when ``faults`` is empty.
FaultPicker = Callable[[dict[str, Any]], Fault | None]

_MODEL = {"id": "fake", "object": "model", "created": 0, "owned_by": "polyrlm"}
_MODEL_LIST = json.dumps({"object": "list", "data": [_MODEL]})


def _halt(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


class FakeOpenAIServer:
    """Fake OpenAI chat-completions and Anthropic Messages endpoints on loopback.

    ``responder`` (a function of the request body returning a ``str`` or a ``FakeReply``; it
    sees OpenAI-style ``messages`` for both APIs), ``latency_s`` (before each answer) and
    ``stream_delay_s`` (before each streamed event that carries content) may change live;
    ``latency_for`` (a function of the request body, like ``responder``) gives each request a
    latency of its own instead of ``latency_s``. The
    first ``fail_first`` requests fail with ``fail_status``, in the error shape of the API asked.
    Every request is recorded in ``calls``. Tokens are counted by hand-checkable rules: words
    of each message + 3; the reply's words + per tool call 1 + the words of its JSON arguments
    (at least 1).

    A request's ``max_tokens`` (OpenAI: also ``max_completion_tokens``, the smaller wins) cuts
    the reply to that many tokens by the same rule (``finish_reason: "length"``, Anthropic's
    ``stop_reason: "max_tokens"``). A prompt of more than ``window_tokens`` tokens gets the
    API's own 400 for a context window exceeded. ``faults`` (a list of ``Fault``, consumed from
    the front, one per request after ``fail_first``) and then ``fault_for`` (a ``FaultPicker``)
    choose faults to serve; see ``fake_faults``. A provider that over-reports: the usage block
    claims ``ceil(completion * usage_factor) + extra_usage_tokens`` completion tokens. All of
    these may change live; a request rejected as invalid or too long consumes no fault.

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
        faults: Sequence[Fault] = (),
        fault_for: FaultPicker | None = None,
        window_tokens: int | None = None,
        usage_factor: float = 1.0,
        extra_usage_tokens: int = 0,
        latency_for: Callable[[dict[str, Any]], float] | None = None,
    ) -> None:
        self.responder = responder
        self.latency_for = latency_for
        self.faults = list(faults)
        self.fault_for = fault_for
        self.window_tokens = window_tokens
        self.usage_factor = usage_factor
        self.extra_usage_tokens = extra_usage_tokens
        self._stopping = threading.Event()  # held requests let go once it is set
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
        self._stopping.clear()
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
        self._stopping.set()
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
        _halt(loop, thread)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, call: ServedCall) -> None:
        with self._lock:
            self._calls.append(call)

    def _tracker(self) -> Callable[[ServedCall], None]:
        """Records a call the first time, then updates that record (a stream or a held
        request is recorded when it starts or ends and updated with how far it got)."""
        index: int | None = None

        def track(call: ServedCall) -> None:
            nonlocal index
            with self._lock:
                if index is None:
                    index = len(self._calls)
                    self._calls.append(call)
                else:
                    self._calls[index] = call

        return track

    def _pick(self, view: dict[str, Any]) -> Fault | None:
        with self._lock:
            if self.faults:
                return self.faults.pop(0)
        picker = self.fault_for
        return None if picker is None else picker(view)

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
        window, prompt = self.window_tokens, prompt_tokens(messages)
        if window is not None and prompt > window:
            self._record(replace(seen, status=400, prompt_tokens=prompt))
            return wire.too_long(prompt, window)
        # Non-blocking, so concurrent requests overlap.
        await asyncio.sleep(self.latency_s if self.latency_for is None else self.latency_for(view))
        with self._lock:  # count under the lock: fail exactly fail_first times, even if concurrent
            fail = self._failures_sent < self.fail_first
            self._failures_sent += fail
        if fail:
            return error(self.fail_status, "fake failure (fail_first)", seen)
        try:
            fault = self._pick(view)
        except Exception as exc:
            return error(500, f"fault_for failed: {exc!r}", seen)
        mode = None if fault is None else fault.mode
        seen = replace(seen, fault=mode, prompt_tokens=prompt)
        if fault is not None and mode in EARLY_MODES:
            track = self._tracker()
            return await serve_early(request, wire, fault, seen, track, self._stopping)
        limit, truncated = wire.limit(body), False
        try:
            reply = as_reply(self.responder(view))
            text, stopped = apply_stop(reply.text, wire.stops(body))
            tools = () if stopped is not None else reply.tool_calls  # generation ended there
            if mode == "empty_choices":
                text, tools, stopped = "", (), None
            elif limit is not None:
                text, tools, truncated = truncate(text, tools, limit)
                stopped = None if truncated else stopped
            completion = completion_tokens(text, tools)  # also checks the arguments are JSON
        except Exception as exc:
            return error(500, f"responder failed: {exc!r}", seen)
        completion = 0 if mode == "empty_choices" else completion
        claimed = math.ceil(completion * self.usage_factor) + self.extra_usage_tokens
        tools = tuple(
            t if t.id else replace(t, id=f"{wire.tool_id_prefix}{next(self._tool_ids)}")
            for t in tools
        )
        cached, created = wire.account(seen.model, body, messages)
        # Hand-checkable counts: words of every message + 3 per message; words of the reply.
        call = replace(
            seen,
            reply=text,
            completion_tokens=completion,
            status=200,
            tool_calls=tools,
            cached_tokens=cached,
            cache_creation_tokens=created,
            truncated=truncated,
            overreported_tokens=0 if mode == "no_usage" else max(0, claimed - completion),
        )
        outcome = Outcome(call, f"{wire.id_prefix}{next(self._ids)}", int(time.time()), stopped)
        track = self._tracker()
        if fault is not None and mode in LATE_MODES:
            delay_s, stopping = self.stream_delay_s, self._stopping
            return await serve_late(request, wire, outcome, fault, track, stopping, delay_s)
        if not body.get("stream"):
            track(call)
            return web.json_response(wire.payload(outcome))
        return await stream_out(request, self.stream_delay_s, wire.events(outcome), call, track)


async def _serve_forever(server: FakeOpenAIServer) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # both end the process cleanly with exit code 0
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    runner = await server._open()
    try:
        print(f"READY {server.base_url}", flush=True)
        await stop.wait()
    finally:
        server._stopping.set()  # held requests let go: the cleanup need not wait for them
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server (echo responder).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--stream-delay", type=float, default=0.0, help="seconds between events")
    parser.add_argument("--window-tokens", type=int, default=None, help="context window")
    parser.add_argument("--usage-factor", type=float, default=1.0, help="over-report usage")
    parser.add_argument("--extra-usage-tokens", type=int, default=0, help="over-report usage")
    parser.add_argument(
        "--fault",
        type=Fault.parse,
        action="append",
        default=[],
        help=f"MODE[:STATUS][:retry-after=S][:after=N][:message=M], repeatable; MODE in "
        f"{', '.join(FAULT_MODES)}",
    )
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        latency_s=args.latency,
        stream_delay_s=args.stream_delay,
        host=args.host,
        port=args.port,
        faults=args.fault,
        window_tokens=args.window_tokens,
        usage_factor=args.usage_factor,
        extra_usage_tokens=args.extra_usage_tokens,
    )
    asyncio.run(_serve_forever(server))
    return 0


if __name__ == "__main__":
    sys.exit(main())
