"""An OpenAI-compatible chat server over :class:`~.engine.Engine` models:
``GET /v1/models`` and ``POST /v1/chat/completions`` (streamed or not, with
``usage`` and ``prompt_tokens_details.cached_tokens``), on 127.0.0.1.

It runs as its own process (``python -m polyrlm.plugins.demo.engine_server
--models JSON --port N --n-threads T``), started and stopped by
:class:`~.local_model.LocalModelServer`: a crash in native code ends the
server, not the run that calls it, and litellm reaches it through its real
``openai/`` provider, as it would any llama.cpp or vLLM server. Every model
is loaded before the port opens, so ``/v1/models`` answering means ready.
A server of one model answers to any model name (as llama.cpp's own server
does); with several, an unknown name is a 404 ``model_not_found``.
Requests to one model are served one at a time (one context each); a
client that goes away mid-stream stops the generation. One log line per
chat request: ``chat MODEL STATUS prompt=P cached=C completion=N S s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from polyrlm.plugins.demo.engine import Engine, EngineError, Generation, PromptTooLong

__all__ = ["DEFAULT_REPLY_TOKENS", "ServerModel", "build_app", "main"]

#: Reply tokens when a request sets no ``max_tokens`` / ``max_completion_tokens``.
DEFAULT_REPLY_TOKENS = 1_024
_DONE = object()


@dataclass(frozen=True)
class ServerModel:
    """A model the server serves: its name in requests, its file and window (tokens)."""

    name: str
    path: str
    n_ctx: int


def _error(status: int, message: str, code: str) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


def _refusal(exc: EngineError) -> web.Response:
    if isinstance(exc, PromptTooLong):  # litellm maps it to ContextWindowExceededError
        return _error(400, str(exc), "context_length_exceeded")
    return _error(500, str(exc), "engine_error")


def _text(content: Any) -> str:
    if isinstance(content, list):  # content parts: the text ones, joined
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _options(body: dict[str, Any]) -> dict[str, Any]:
    stop = body.get("stop") or []
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_REPLY_TOKENS
    temperature = body.get("temperature")
    return {
        "max_tokens": int(limit),
        "temperature": 1.0 if temperature is None else float(temperature),
        "top_p": float(body.get("top_p") or 1.0),
        "seed": int(body.get("seed") or 0),
        "stop": [stop] if isinstance(stop, str) else list(stop),
    }


def _usage(got: Generation) -> dict[str, Any]:
    return {
        "prompt_tokens": got.prompt_tokens,
        "completion_tokens": got.completion_tokens,
        "total_tokens": got.prompt_tokens + got.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": got.cached_tokens},
    }


def _pump(
    engine: Engine,
    prompt: str,
    options: dict[str, Any],
    got: Generation,
    put: Callable[[object], None],
    stopped: threading.Event,
) -> None:
    """In a worker thread: generate under the model's lock, handing each piece to
    ``put``; an EngineError is handed over too, then ``_DONE``."""
    try:
        with engine.lock:
            pieces = engine.generate(prompt, usage=got, **options)
            try:
                for piece in pieces:
                    put(piece)
                    if stopped.is_set():
                        break
            finally:
                pieces.close()
    except EngineError as exc:
        put(exc)
    finally:
        put(_DONE)


class _Chat:
    """One chat request: its generation in a thread, its pieces through a queue."""

    def __init__(self, engine: Engine, body: dict[str, Any]) -> None:
        messages = [
            {"role": str(m.get("role")), "content": _text(m.get("content"))}
            for m in body["messages"]
        ]
        self.prompt = engine.chat_prompt(messages)
        self.engine, self.options = engine, _options(body)
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.got = Generation()
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.stopped = threading.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def put(item: object) -> None:
            loop.call_soon_threadsafe(self.queue.put_nowait, item)

        args = (self.engine, self.prompt, self.options, self.got, put, self.stopped)
        threading.Thread(target=_pump, args=args, daemon=True).start()

    async def pieces(self) -> Any:
        while (item := await self.queue.get()) is not _DONE:
            if isinstance(item, EngineError):
                raise item
            yield item


def _chunk(head: dict[str, Any], delta: dict[str, Any], finish: str | None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n".encode()


async def _stream(request: web.Request, chat: _Chat, head: dict[str, Any]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    pieces = chat.pieces()
    try:
        first = await anext(pieces, None)  # an error before any text is a plain error reply
    except EngineError as exc:
        return _refusal(exc)
    await response.prepare(request)
    try:
        await response.write(_chunk(head, {"role": "assistant", "content": ""}, None))
        if first is not None:
            await response.write(_chunk(head, {"content": first}, None))
        async for piece in pieces:
            await response.write(_chunk(head, {"content": piece}, None))
        await response.write(_chunk(head, {}, chat.got.finish_reason))
        if chat.include_usage:
            body = {**head, "choices": [], "usage": _usage(chat.got)}
            await response.write(f"data: {json.dumps(body)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except (ConnectionError, EngineError):  # the client left, or the engine broke mid-way
        chat.stopped.set()
    return response


async def _complete(chat: _Chat, head: dict[str, Any]) -> web.Response:
    try:
        text = "".join([piece async for piece in chat.pieces()])
    except EngineError as exc:
        return _refusal(exc)
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": chat.got.finish_reason}
    body = {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(chat.got)}
    return web.json_response(body)


def build_app(engines: dict[str, Engine]) -> web.Application:
    """The aiohttp application serving ``engines`` by name."""

    async def models(request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model", "owned_by": "polyrlm"} for name in engines]
        return web.json_response({"object": "list", "data": data})

    async def chat(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            body = await request.json()
            assert isinstance(body, dict) and isinstance(body.get("messages"), list)
        except (ValueError, AssertionError):
            return _error(400, "the body must be a JSON object with a 'messages' list", "invalid")
        name = str(body.get("model", ""))
        engine = engines.get(name) or (next(iter(engines.values())) if len(engines) == 1 else None)
        if engine is None:
            return _error(404, f"The model `{name}` does not exist", "model_not_found")
        try:
            work = _Chat(engine, body)
        except EngineError as exc:
            return _refusal(exc)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time())}
        head |= {"model": name, "object": "chat.completion.chunk"}
        work.start()
        if body.get("stream"):
            reply = await _stream(request, work, head)
        else:
            reply = await _complete(work, head)
        got, seconds = work.got, time.perf_counter() - started
        print(
            f"chat {name} {reply.status} prompt={got.prompt_tokens} cached={got.cached_tokens} "
            f"completion={got.completion_tokens} {seconds:.2f} s",
            flush=True,
        )
        return reply

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m polyrlm.plugins.demo.engine_server")
    p.add_argument("--models", required=True, help='JSON: [{"name":..,"path":..,"n_ctx":..}]')
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--n-threads", type=int, default=2)
    args = p.parse_args(argv)
    engines: dict[str, Engine] = {}
    for item in json.loads(args.models):
        model = ServerModel(**item)
        started = time.perf_counter()
        engines[model.name] = Engine(model.path, n_ctx=model.n_ctx, n_threads=args.n_threads)
        print(f"loaded {model.name} ({model.path}) in {time.perf_counter() - started:.1f} s")
    print(f"serving {', '.join(engines)} on http://127.0.0.1:{args.port}/v1", flush=True)
    web.run_app(build_app(engines), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
