"""The DuckDB worker process: ``python -m polyrlm.backends.sql.worker FD``.

It serves one environment's database over the socket ``FD`` (a socketpair
end the host passed down), one request at a time, each a frame: 8 bytes of
length, then JSON. It starts with no host environment variable but a few
(no API keys), its stdout and stderr on /dev/null, and caps its own address
space (``RLIMIT_AS``, once the context is loaded) and core dumps, so a
statement that allocates without bound fails here with DuckDB's "Out of
Memory Error" instead of growing the host; and it offers itself first to
the kernel's OOM killer (``oom_score_adj`` 1000) should the machine run
out. Sub-calls (``llm()``, ``rlm()``) and the user's tools reach the host
through the bridge (:mod:`polyrlm.bridge`). A thread reads the socket: when the host goes away
(closes it, or dies) the worker exits at once, even mid-statement.

Requests (``op``): the first one carries the settings; then ``load`` (a
context plan, see :mod:`polyrlm.backends.sql.transfer`, and the memory
cap), ``execute``, ``state``, ``guide``. Replies: ``{"ok": ...}`` or
``{"error": type, "message": text}``.

pandas is kept out (:data:`KEPT_OUT`): nothing here needs it (a DataFrame
context becomes Arrow on the host), but pyarrow imports it whenever
installed, to check whether an array's or scalar's input is a pandas
object, which was a quarter of a second of every SQL environment's start.
"""

from __future__ import annotations

import importlib.abc
import json
import os
import queue
import resource
import socket
import struct
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from polyrlm.backends.sql.limits import SQL_ERROR_MAX_CHARS, cut_text

#: Modules this process never imports: an ``import`` of one raises
#: ImportError, which pyarrow and DuckDB take as "not installed".
KEPT_OUT = ("pandas",)


class _KeepOut(importlib.abc.MetaPathFinder):
    """Refuses the modules of :data:`KEPT_OUT` (``sys.modules[name] = None``
    would not do: Cython code, pyarrow's, then imports None)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.partition(".")[0] in KEPT_OUT:
            raise ModuleNotFoundError(f"{name} is kept out of the DuckDB worker", name=name)
        return None


__all__ = ["FRAME_HEADER", "BridgeSubCalls", "main", "recv_frame", "send_frame"]

#: Frame header: the body's length in bytes, big-endian unsigned 64 bits.
FRAME_HEADER = struct.Struct(">Q")


class FrameError(Exception):
    """The other end closed the socket, or sent a frame too large."""


def send_frame(sock: socket.socket, message: Any) -> None:
    body = json.dumps(message, ensure_ascii=False).encode("utf-8", "replace")
    sock.sendall(FRAME_HEADER.pack(len(body)) + body)


def _read(sock: socket.socket, size: int) -> bytes:
    data = bytearray(size)
    view, got = memoryview(data), 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise FrameError("the socket was closed")
        got += n
    return bytes(data)


def recv_frame(sock: socket.socket, max_bytes: int) -> Any:
    """One frame's JSON; :class:`FrameError` past ``max_bytes`` (not read)."""
    (size,) = FRAME_HEADER.unpack(_read(sock, FRAME_HEADER.size))
    if size > max_bytes:
        raise FrameError(f"a reply of {size:,} bytes; at most {max_bytes:,} are read")
    return json.loads(_read(sock, size))


class BridgeSubCalls:
    """The worker's :class:`~polyrlm.environment.SubCalls`: the host bridge."""

    def __init__(self) -> None:
        from polyrlm import bridge_client

        self._client = bridge_client

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, its failures as polyrlm's own errors and failures."""
        from polyrlm.environment import SubCallFailure
        from polyrlm.errors import SubCallError
        from polyrlm.tools import ToolError

        try:
            reply = fn(*args)
        except self._client.SubCallError as exc:  # "Type: message", as the host said it
            kind, _, message = str(exc).partition(": ")
            if kind == "ToolError":
                raise ToolError(message) from None
            raise SubCallError(message if kind == "SubCallError" else str(exc)) from None
        if not isinstance(reply, list):
            return reply
        failure = self._client.SubCallFailure
        return [SubCallFailure(r.error) if isinstance(r, failure) else r for r in reply]

    def llm_query(
        self, prompt: str, model: str | None = None, schema: dict[str, Any] | None = None
    ) -> Any:
        return self._call(self._client.llm_query, prompt, model, schema)

    def llm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: dict[str, Any] | None = None
    ) -> list[Any]:
        return list(self._call(self._client.llm_batch, list(prompts), model, schema))

    def call_tools(self, name: str, arguments: Sequence[Mapping[str, Any]]) -> list[Any]:
        listed = [dict(a) for a in arguments]
        return list(self._call(self._client.call_tools, name, listed))

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        return str(self._call(self._client.rlm_query, prompt, context))

    def rlm_batch(self, prompts: Sequence[str], contexts: Sequence[Any] | None = None) -> list[str]:
        listed = None if contexts is None else list(contexts)
        return list(self._call(self._client.rlm_batch, list(prompts), listed))


def _mapped_bytes(paths: set[str]) -> int:
    """Bytes of this process's address space that map the files ``paths``."""
    total = 0
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].strip() in paths:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    total += end - start
    except OSError:
        pass
    return total


def _load(engine: Any, plan: list[dict[str, Any]], memory_bytes: int) -> None:
    """Load the context, then cap the address space: ``memory_bytes`` plus
    the memory-mapped context files (a mapping counts against RLIMIT_AS).
    From here on the model's SQL runs; the cap cannot be raised (hard limit)."""
    from polyrlm.backends.sql.transfer import unship

    sources = unship(plan)
    engine.load(sources)
    files = {f for s in sources for f in s.files}
    files |= {str(item["text"]) for item in plan if "text" in item}
    files |= {str(f) for item in plan for f in item.get("arrow", {}).values()}
    limit = _mapped_bytes({os.path.realpath(f) for f in files}) + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _serve(sock: socket.socket, requests: queue.Queue[Any]) -> None:
    """The socket's reader: each request to the queue; the host gone, exit."""
    try:
        while True:
            requests.put(recv_frame(sock, 2**62))
    except Exception:
        os._exit(0)  # the host closed or died: nothing left to serve


def _handle(engine: Any, request: dict[str, Any]) -> Any:
    op = request.get("op")
    if op == "load":
        _load(engine, request["plan"], int(request["memory_bytes"]))
        return None
    if op == "execute":
        result = engine.execute(
            str(request["code"]),
            float(request["timeout_s"]),
            int(request["limit_chars"]),
            bool(request.get("show_result", True)),
        )
        return result.model_dump(mode="json")
    if op == "state":  # the answer stays out: the host keeps its own
        return engine.state().model_dump(mode="json", include={"variables"})
    if op == "guide":
        return engine.guide(float(request["timeout_s"]), bool(request.get("compact")))
    raise ValueError(f"unknown request {op!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    sys.meta_path.insert(0, _KeepOut())
    sock = socket.socket(fileno=int(args[0]))
    init = recv_frame(sock, 2**20)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash writes no GBs of core
    try:  # short of memory, the kernel's OOM killer takes this process, not the host
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")
    except OSError:
        pass
    requests: queue.Queue[Any] = queue.Queue()
    try:
        from polyrlm.backends.sql.engine import Engine, Settings

        settings = dict(init["settings"])
        settings["tools"] = tuple(settings.get("tools") or ())
        engine = Engine(BridgeSubCalls(), Settings(**settings))
    except Exception as exc:
        send_frame(sock, {"error": type(exc).__name__, "message": str(exc)})
        return 1
    send_frame(sock, {"ok": None})
    threading.Thread(target=_serve, args=(sock, requests), daemon=True).start()
    while True:
        request = requests.get()
        try:
            reply = {"ok": _handle(engine, request)}
        except MemoryError:
            reply = {"error": "MemoryError", "message": "out of memory in the DuckDB worker"}
        except Exception as exc:
            message = cut_text(str(exc), SQL_ERROR_MAX_CHARS)
            reply = {"error": type(exc).__name__, "message": message}
        try:
            send_frame(sock, reply)
        except MemoryError:  # the reply did not fit in memory as JSON: nothing was sent
            send_frame(sock, {"error": "MemoryError", "message": "the reply did not fit"})


if __name__ == "__main__":
    sys.exit(main())
