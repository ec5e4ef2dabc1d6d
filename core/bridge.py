"""The host bridge: how out-of-process environments reach the broker.

One :class:`Bridge` per environment: a Unix socket in a private temporary
directory (mode 0700), served by a thread of its own for the environment's
lifetime. The protocol is JSON lines. A connection starts with the
environment's random token on a line of its own; the bridge answers with a
greeting, then serves requests one at a time (the next line is read once
the last reply is written). Requests carry no token: the connection is
authenticated (a ``token`` field, if sent, is ignored)::

    <token>
    {"authenticated": true, "max_request_bytes": 67108864}
    {"id": 1, "method": "llm_batch", "params": {"prompts": ["..."]}}
    {"id": 1, "result": ["...", "..."], "failures": {"1": "why item 1 failed"}}
    {"id": 2, "method": "llm_query", "params": {"prompt": "..."}}
    {"id": 2, "error": {"type": "SubCallError", "message": "..."}}

The methods and what they ask of :class:`SubCalls` are in
:mod:`polyrlm.bridge_methods`; each request waits in a worker thread on the environment's blocking
:class:`SubCalls`, and a ``llm_batch`` of 1,000 is one request that fans
out in the broker. A malformed request gets a ``BadRequest`` reply and the
connection goes on.

Floods cost the host a bounded amount, per environment (so hostile code,
which holds its own token, can slow only its own environment):

* The token line is read first, at most :data:`BRIDGE_TOKEN_MAX_BYTES`
  within :data:`BRIDGE_AUTH_TIMEOUT_S`; nothing else is parsed until it
  matches (``hmac.compare_digest``). A wrong, long, missing or slow token
  gets an ``Unauthorized`` line and the connection is closed.
* At most :data:`BRIDGE_MAX_CONNECTIONS` sockets, unauthenticated ones
  included; one past it gets a ``Busy`` line and is closed unread (the
  client retries for a while).
* A request line (its newline included) is at most
  :data:`BRIDGE_MAX_REQUEST_BYTES`, read in pieces of
  :data:`BRIDGE_READ_CHUNK_BYTES`; a longer one is refused (``BadRequest``)
  and its connection closed before more of it is kept.
* Request bytes held at once (being read or served) are at most
  :data:`BRIDGE_MAX_HELD_BYTES` beyond one piece per connection: a request
  longer than one piece first reserves the whole request cap, and waits
  (its socket unread) until that much is free.
* Requests in flight: one per connection, on at most
  :data:`BRIDGE_MAX_WORKERS` threads.

The client side is :mod:`polyrlm.bridge_client` (standard library only).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from polyrlm.bridge_methods import BadRequest, serve
from polyrlm.environment import SubCalls
from polyrlm.errors import PolyrlmError

__all__ = [
    "BRIDGE_AUTH_TIMEOUT_S",
    "BRIDGE_MAX_CONNECTIONS",
    "BRIDGE_MAX_HELD_BYTES",
    "BRIDGE_MAX_REQUEST_BYTES",
    "BRIDGE_MAX_WORKERS",
    "BRIDGE_READ_CHUNK_BYTES",
    "BRIDGE_START_TIMEOUT_S",
    "BRIDGE_TOKEN_MAX_BYTES",
    "Bridge",
]

#: Bytes of a connection's first line, the token (64 hex digits), newline included.
BRIDGE_TOKEN_MAX_BYTES = 256
#: Seconds a new connection has to send its token line (a client sends it at once).
BRIDGE_AUTH_TIMEOUT_S = 5.0
#: Bytes of one request line, newline included: a batch of 1,000 prompts of 64 KiB.
BRIDGE_MAX_REQUEST_BYTES = 64 * 1024**2
#: Bytes read from a socket at a time; a longer request reserves the whole cap first.
BRIDGE_READ_CHUNK_BYTES = 64 * 1024
#: Bytes of long requests one bridge holds at once (being read or served).
BRIDGE_MAX_HELD_BYTES = 2 * BRIDGE_MAX_REQUEST_BYTES
#: Sockets one bridge holds at once, unauthenticated ones included.
BRIDGE_MAX_CONNECTIONS = 32
#: Worker threads waiting on sub-calls at once (one per request in flight).
BRIDGE_MAX_WORKERS = 32
#: Seconds the bridge thread may take to start listening.
BRIDGE_START_TIMEOUT_S = 10.0


class _TooLong(Exception):
    pass


class _HeldBytes:
    """Bytes of long requests held at once; a taker past the limit waits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    async def take(self, size: int) -> None:
        # Nothing held: go ahead whatever the size, so a taker never waits forever.
        while self.used and self.used + size > self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size
        self._freed.set()


class _Lines:
    """Lines of one connection, each read in pieces up to a cap: a line that
    is too long is refused having kept at most the cap and one piece.

    A long line is kept as its pieces and joined once it ends, never grown
    in place: a growing buffer reallocated again and again leaves each old
    copy resident in a long-lived process's heap (glibc's mmap threshold
    rises up to 32 MiB as large blocks are freed), which made a refused
    flood cost the host twice its cap."""

    def __init__(self, reader: asyncio.StreamReader, held: _HeldBytes) -> None:
        self.reader = reader
        self.held = held
        self.reserved = 0  # bytes of `held` this connection's request holds
        self._pieces: list[bytes] = []  # the line so far: no newline in them
        self._size = 0  # their bytes
        self._rest = b""  # what came after the last line's newline

    async def next(self, cap: int) -> bytes | None:
        """The next line without its newline; None at the end of the stream."""
        while True:
            data, self._rest = self._rest, b""
            if not data:
                data = await self.reader.read(BRIDGE_READ_CHUNK_BYTES)
                if not data:
                    return None
            end = data.find(b"\n")
            if end >= 0:
                if self._size + end >= cap:
                    raise _TooLong
                self._rest = data[end + 1 :]
                line = b"".join([*self._pieces, data[:end]])
                self._pieces.clear()
                self._size = 0
                if self.reserved:
                    self.release(keep=len(line))
                return line
            self._pieces.append(data)
            self._size += len(data)
            if self._size >= cap:
                raise _TooLong
            if self._size >= BRIDGE_READ_CHUNK_BYTES and not self.reserved:
                # Reserve the worst case once, so two long requests never wait
                # on each other's half-read bytes (no deadlock).
                await self.held.take(cap)
                self.reserved = cap

    def release(self, keep: int = 0) -> None:
        """Give back what this connection holds beyond ``keep`` bytes."""
        self.held.give(self.reserved - keep)
        self.reserved = keep


class Bridge:
    """Serves one environment's sub-calls on a Unix socket until closed."""

    def __init__(self, subcalls: SubCalls) -> None:
        self.subcalls = subcalls
        self.token = secrets.token_hex(32)
        self.directory = Path(tempfile.mkdtemp(prefix="polyrlm-bridge-"))  # mode 0700
        self.path = self.directory / "bridge.sock"
        self._loop = asyncio.new_event_loop()
        self._executor = ThreadPoolExecutor(BRIDGE_MAX_WORKERS, "polyrlm-bridge-call")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conns: set[socket.socket] = set()  # accepted and not yet closed
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references
        self._held = _HeldBytes(BRIDGE_MAX_HELD_BYTES)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="polyrlm-bridge", daemon=True)
        try:
            self._thread.start()
        except RuntimeError as exc:  # out of threads: leave nothing behind
            self._error = exc
            self._listener.close()
            self._loop.close()
        else:
            self._ready.wait(BRIDGE_START_TIMEOUT_S)
        if not self._ready.is_set() or self._error is not None:
            self.close()
            raise PolyrlmError(f"the host bridge did not start: {self._error}")

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that tell a client where and how to connect."""
        return {"POLYRLM_BRIDGE": str(self.path), "POLYRLM_BRIDGE_TOKEN": self.token}

    @property
    def connections(self) -> int:
        """Connections open now, authenticated or not (at most the cap)."""
        return len(self._conns)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.set_default_executor(self._executor)
        try:
            self._listener.bind(str(self.path))
            self._listener.listen(BRIDGE_MAX_CONNECTIONS)
            self._listener.setblocking(False)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            self._listener.close()
            self._loop.close()
            return
        self._spawn(self._accept())
        self._ready.set()
        self._loop.run_forever()
        # Closing: stop listening; calls still waiting on the broker are not
        # waited for (their environment is going away).
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        for conn in list(self._conns):  # those whose task never started
            conn.close()
        self._listener.close()
        self._loop.run_until_complete(asyncio.sleep(0))  # transports finish closing
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._loop.close()

    async def _accept(self) -> None:
        # Our own accept loop, not asyncio's server: the count goes up as a
        # socket is accepted, so the host never holds more than the cap (and
        # the one it is refusing).
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._listener)
            except OSError:  # out of file descriptors, say: try again, never stop serving
                await asyncio.sleep(0.1)
                continue
            if len(self._conns) >= BRIDGE_MAX_CONNECTIONS:
                busy = _error(
                    None, "Busy", f"the bridge holds {BRIDGE_MAX_CONNECTIONS} connections"
                )
                with contextlib.suppress(OSError):
                    conn.send(_encode(busy))  # unread, and at once: a fresh socket takes it
                conn.close()
                continue
            self._conns.add(conn)
            self._spawn(self._client(conn))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _client(self, conn: socket.socket) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            # The reader's limit only sizes its buffer (lines are read in
            # pieces): past twice that a stream stops reading its socket, so
            # about one socket read is buffered before the token is checked.
            reader, writer = await asyncio.open_unix_connection(
                sock=conn, limit=BRIDGE_TOKEN_MAX_BYTES
            )
            lines = _Lines(reader, self._held)
            try:
                if await self._authenticate(lines, writer):
                    ready = {"authenticated": True, "max_request_bytes": BRIDGE_MAX_REQUEST_BYTES}
                    writer.write(_encode(ready))
                    await self._requests(lines, writer)
            finally:
                lines.release()
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            self._conns.discard(conn)
            if writer is None:
                conn.close()
            elif writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a client that does not read loses the rest at once
            else:
                writer.close()  # and its socket

    async def _authenticate(self, lines: _Lines, writer: asyncio.StreamWriter) -> bool:
        try:
            async with asyncio.timeout(BRIDGE_AUTH_TIMEOUT_S):
                token = await lines.next(BRIDGE_TOKEN_MAX_BYTES)
        except (TimeoutError, _TooLong):
            token = None
        if token is not None and hmac.compare_digest(token.strip(), self.token.encode()):
            return True
        _refuse(writer, "Unauthorized", "the first line must be the bridge token")
        return False

    async def _requests(self, lines: _Lines, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                line = await lines.next(BRIDGE_MAX_REQUEST_BYTES)
            except _TooLong:
                message = f"a request takes at most {BRIDGE_MAX_REQUEST_BYTES:,} bytes"
                _refuse(writer, "BadRequest", message)
                return
            if line is None:
                return
            # Parsed and answered in a worker: a large request never stalls the loop.
            reply = await loop.run_in_executor(None, self._answer, line)
            del line
            writer.write(reply)
            await writer.drain()
            lines.release()

    def _answer(self, line: bytes) -> bytes:
        request_id: Any = None
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise BadRequest("a request must be a JSON object")
            request_id = request.get("id")
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise BadRequest("params must be an object")
            served = serve(self.subcalls, str(request.get("method")), params)
            return _encode({"id": request_id, **served})
        except (BadRequest, ValueError) as exc:
            return _encode(_error(request_id, "BadRequest", str(exc)))
        except PolyrlmError as exc:
            return _encode(_error(request_id, type(exc).__name__, str(exc)))
        except Exception as exc:  # a bug must reach the client, not kill the bridge
            return _encode(_error(request_id, type(exc).__name__, str(exc)))

    def close(self) -> None:
        """Stop serving and remove the socket and its directory. Idempotent."""
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(BRIDGE_START_TIMEOUT_S)
        shutil.rmtree(self.directory, ignore_errors=True)


def _encode(message: dict[str, Any]) -> bytes:
    # surrogatepass: a lone surrogate in a prompt comes back as it went in
    # (json.loads decodes bytes the same way) instead of failing the reply.
    return json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"


def _refuse(writer: asyncio.StreamWriter, kind: str, message: str) -> None:
    """One error line; the caller returns, and :meth:`Bridge._client` closes."""
    writer.write(_encode(_error(None, kind, message)))


def _error(request_id: Any, kind: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "error": {"type": kind, "message": message}}
