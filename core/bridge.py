"""The host bridge: how out-of-process environments reach the broker.

One :class:`Bridge` per environment: a Unix socket in a private temporary
directory (mode 0700), served by a thread of its own for the environment's
lifetime. The protocol is JSON lines; every request carries the
environment's random token::

    {"token": "...", "id": 1, "method": "llm_batch", "params": {"prompts": ["..."]}}
    {"id": 1, "result": ["...", "..."], "failures": {"1": "why item 1 failed"}}
    {"id": 1, "error": {"type": "SubCallError", "message": "..."}}

Methods: ``llm_query``, ``llm_batch``, ``rlm_query``, ``rlm_batch``. Requests
on one connection are served concurrently (each waits in a worker thread on
the environment's blocking :class:`SubCalls`); a ``llm_batch`` of 1,000 is
one request that fans out in the broker. A malformed, oversized or
unauthenticated request gets an error reply and harms nothing else. The
client side is :mod:`polyrlm.bridge_client` (standard library only).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from polyrlm.environment import SubCallFailure, SubCalls
from polyrlm.errors import PolyrlmError

__all__ = ["BRIDGE_MAX_REQUEST_BYTES", "BRIDGE_MAX_WORKERS", "BRIDGE_START_TIMEOUT_S", "Bridge"]

#: Bytes one request line may take (a batch of prompts included).
BRIDGE_MAX_REQUEST_BYTES = 256 * 1024**2
#: Seconds the bridge thread may take to start listening.
BRIDGE_START_TIMEOUT_S = 10.0
#: Worker threads waiting on sub-calls at once (one per request in flight).
BRIDGE_MAX_WORKERS = 64


class _BadRequest(Exception):
    pass


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _BadRequest(f"{name} must be a string, not {type(value).__name__}")
    return value


def _texts(value: Any, name: str) -> list[str]:
    if not isinstance(value, list):
        raise _BadRequest(f"{name} must be a list of strings")
    return [_text(v, f"{name}[{i}]") for i, v in enumerate(value)]


def _model(params: dict[str, Any]) -> str | None:
    model = params.get("model")
    return None if model is None else _text(model, "model")


class Bridge:
    """Serves one environment's sub-calls on a Unix socket until closed."""

    def __init__(self, subcalls: SubCalls) -> None:
        self.subcalls = subcalls
        self.token = secrets.token_hex(32)
        self.directory = Path(tempfile.mkdtemp(prefix="polyrlm-bridge-"))  # mode 0700
        self.path = self.directory / "bridge.sock"
        self._loop = asyncio.new_event_loop()
        self._executor = ThreadPoolExecutor(BRIDGE_MAX_WORKERS, "polyrlm-bridge-call")
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="polyrlm-bridge", daemon=True)
        self._thread.start()
        if not self._ready.wait(BRIDGE_START_TIMEOUT_S) or self._error is not None:
            self.close()
            raise PolyrlmError(f"the host bridge did not start: {self._error}")

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that tell a client where and how to connect."""
        return {"POLYRLM_BRIDGE": str(self.path), "POLYRLM_BRIDGE_TOKEN": self.token}

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_default_executor(self._executor)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_unix_server(
                    self._client, path=str(self.path), limit=BRIDGE_MAX_REQUEST_BYTES
                )
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        self._loop.run_forever()
        # Closing: stop listening; calls still waiting on the broker are not
        # waited for (their environment is going away).
        self._server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        for writer in list(self._writers):
            writer.close()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(self._server.wait_closed())
        self._loop.run_until_complete(asyncio.sleep(0))  # transports finish closing
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lock = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()
        self._writers.add(writer)

        async def reply(message: dict[str, Any]) -> None:
            data = json.dumps(message, ensure_ascii=False).encode() + b"\n"
            async with lock:
                writer.write(data)
                await writer.drain()

        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await reply(_error(None, "BadRequest", "request too large"))
                    break
                if not line:
                    break
                task = asyncio.create_task(self._answer(line, reply))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, line: bytes, reply: Callable[[dict[str, Any]], Any]) -> None:
        request_id: Any = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise _BadRequest("a request must be a JSON object")
            request_id = request.get("id")
            token = request.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(token, self.token):
                await reply(_error(request_id, "Unauthorized", "bad or missing token"))
                return
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise _BadRequest("params must be an object")
            result = await asyncio.get_running_loop().run_in_executor(
                None, self._call, str(request.get("method")), params
            )
            await reply({"id": request_id, **result})
        except (_BadRequest, ValueError) as exc:
            await reply(_error(request_id, "BadRequest", str(exc)))
        except PolyrlmError as exc:
            await reply(_error(request_id, type(exc).__name__, str(exc)))
        except (ConnectionError, OSError):
            pass
        except Exception as exc:  # a bug must reach the client, not kill the bridge
            await reply(_error(request_id, type(exc).__name__, str(exc)))

    def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        sc = self.subcalls
        if method == "llm_query":
            return {"result": sc.llm_query(_text(params.get("prompt"), "prompt"), _model(params))}
        if method == "rlm_query":
            prompt = _text(params.get("prompt"), "prompt")
            return {"result": sc.rlm_query(prompt, params.get("context"))}
        if method == "llm_batch":
            return _batch(sc.llm_batch(_texts(params.get("prompts"), "prompts"), _model(params)))
        if method == "rlm_batch":
            contexts = params.get("contexts")
            if contexts is not None and not isinstance(contexts, list):
                raise _BadRequest("contexts must be a list")
            return _batch(sc.rlm_batch(_texts(params.get("prompts"), "prompts"), contexts))
        raise _BadRequest(f"unknown method {method!r}")

    def close(self) -> None:
        """Stop serving and remove the socket and its directory. Idempotent."""
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(BRIDGE_START_TIMEOUT_S)
        shutil.rmtree(self.directory, ignore_errors=True)


def _error(request_id: Any, kind: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"type": kind, "message": message}}


def _batch(items: list[str]) -> dict[str, Any]:
    failures = {str(i): x.error for i, x in enumerate(items) if isinstance(x, SubCallFailure)}
    return {"result": [str(x) for x in items], "failures": failures}
