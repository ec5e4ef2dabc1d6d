"""Running one cell in a kernel and reading what it sends, capped on the host.

The kernel's messages are hostile input: the model's code can write to the
kernel's sockets itself (it holds the connection key), and undo the
kernel-side caps of :mod:`polyrlm.backends.python.kernel_prelude`. So the
host caps everything again, here:

* every ZeroMQ socket of the client refuses a message over
  :data:`KERNEL_MESSAGE_MAX_BYTES` (the connection drops; the message is
  lost) and queues at most :data:`KERNEL_QUEUE_MESSAGES` unread ones per
  socket, so what a kernel can make the host hold is bounded;
* text of every kind (``stream``, ``display_data``, ``execute_result``) goes
  into one :class:`~polyrlm.pycell.Sink` of ``capture_limit_chars``, the
  error text into another: the rest is counted, never kept;
* a message that does not parse or has the wrong shape is skipped;
* a cell ends at its ``idle`` status and its ``execute_reply``; when one of
  the two is lost, the other and a short wait end it; when a connection is
  lost (a frame over the cap), the kernel is replaced.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from polyrlm.pycell import Sink

__all__ = [
    "KERNEL_DRAIN_S",
    "KERNEL_MESSAGE_MAX_BYTES",
    "KERNEL_POLL_S",
    "KERNEL_QUEUE_MESSAGES",
    "KERNEL_READY_RETRY_S",
    "KERNEL_REPLY_TIMEOUT_S",
    "CellRun",
    "cap_sockets",
    "run_cell",
    "unwatch_sockets",
    "wait_ready",
    "watch_sockets",
]

#: Bytes of one message frame the host accepts from the kernel (ZMQ_MAXMSGSIZE).
KERNEL_MESSAGE_MAX_BYTES = 16 * 1024**2
#: Unread messages the host queues per kernel socket (ZMQ_RCVHWM).
KERNEL_QUEUE_MESSAGES = 16
#: Seconds between checks that the kernel is still alive while a cell runs.
KERNEL_POLL_S = 0.2
#: Seconds to wait for the execute_reply once the kernel said it is idle.
KERNEL_REPLY_TIMEOUT_S = 5.0
#: Seconds to keep reading output after the reply came without an idle status.
KERNEL_DRAIN_S = 0.5
#: Seconds a starting kernel's kernel_info request waits for its reply and its
#: idle status before it is sent again (a subscription made a moment too late
#: misses the first request's status).
KERNEL_READY_RETRY_S = 0.5

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def cap_sockets(context: zmq.Context[Any]) -> None:
    """Cap every socket ``context`` makes from now on (the client's)."""
    context.setsockopt(zmq.MAXMSGSIZE, KERNEL_MESSAGE_MAX_BYTES)
    context.setsockopt(zmq.RCVHWM, KERNEL_QUEUE_MESSAGES)


def watch_sockets(kc: Any) -> list[zmq.Socket[Any]]:
    """Monitors of the client's iopub and shell sockets. A frame over the
    cap ends its connection for good (ZeroMQ does not reconnect after a
    protocol error): the monitor says so, and the kernel is replaced."""
    return [
        channel.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        for channel in (kc.iopub_channel, kc.shell_channel)
    ]


def unwatch_sockets(kc: Any, monitors: list[zmq.Socket[Any]]) -> None:
    for channel in (kc.iopub_channel, kc.shell_channel):
        with contextlib.suppress(zmq.ZMQError):
            channel.socket.disable_monitor()
    for monitor in monitors:
        monitor.close(linger=0)


@dataclass(frozen=True)
class CellRun:
    """What one cell gave, as the host read it."""

    output: str
    #: Output characters the host dropped past the cap.
    dropped: int
    error: str | None
    timed_out: bool
    duration_s: float
    #: The reply's status ("ok", "error", "aborted"); None: no reply came.
    status: str | None = None
    #: The user expression's entry of the reply (untrusted); None: none.
    value: Any = None
    #: Set when the kernel must be restarted: how it was lost.
    lost: str | None = None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


class _Cell:
    """The messages of one cell, folded into capped text."""

    def __init__(self, msg_id: str, limit: int) -> None:
        self.msg_id = msg_id
        self.out, self.err = Sink(limit), Sink(limit)
        self.idle = False
        self.reply: dict[str, Any] | None = None

    def _ours(self, msg: Any) -> dict[str, Any] | None:
        if not isinstance(msg, dict) or not isinstance(msg.get("parent_header"), dict):
            return None
        if msg["parent_header"].get("msg_id") != self.msg_id:
            return None
        content = msg.get("content")
        return content if isinstance(content, dict) else None

    def iopub(self, msg: Any) -> None:
        content = self._ours(msg)
        if content is None:
            return
        kind = msg.get("msg_type")
        if kind == "stream":
            self.out.write(_text(content.get("text")))
        elif kind in ("execute_result", "display_data"):
            data = content.get("data")
            self.out.write(_text(data.get("text/plain") if isinstance(data, dict) else None) + "\n")
        elif kind == "error":
            lines = content.get("traceback")
            lines = lines if isinstance(lines, list) else []
            self.err = Sink(self.err.limit)  # the last error is the block's
            for i, line in enumerate(lines):
                self.err.write(("\n" if i else "") + _ANSI.sub("", _text(line)))
        elif kind == "status" and content.get("execution_state") == "idle":
            self.idle = True

    def shell(self, msg: Any) -> None:
        content = self._ours(msg)
        if content is not None:
            self.reply = content

    def error(self) -> str | None:
        if self.err.kept or self.err.dropped:
            cut = f"\n[error text cut: {self.err.dropped:,} characters dropped]"
            return self.err.getvalue() + (cut if self.err.dropped else "")
        if self.reply is not None and self.reply.get("status") == "error":
            ename, evalue = _text(self.reply.get("ename")), _text(self.reply.get("evalue"))
            return f"{ename}: {evalue}"[: self.err.limit]
        return None


_BROKE = f"broke its connection to the host (a message over {KERNEL_MESSAGE_MAX_BYTES:,} bytes)"


def _dies(alive: Callable[[], bool]) -> bool:
    """Whether the kernel exits within a short wait (a dying kernel's
    sockets close a moment before its process is gone)."""
    until = time.perf_counter() + KERNEL_DRAIN_S
    while alive():
        if time.perf_counter() >= until:
            return False
        time.sleep(0.01)
    return True


def _receive(channel: Any) -> Any:
    """One message, or None when it does not parse (bad signature, bad JSON...)."""
    try:
        return channel.get_msg(timeout=0)
    except Exception:  # hostile bytes: jupyter_client raises many kinds here
        return None


def run_cell(
    kc: Any,
    code: str,
    *,
    expression: str | None,
    timeout: float,
    grace: float,
    limit: int,
    interrupt: Callable[[], None],
    alive: Callable[[], bool],
    monitors: list[zmq.Socket[Any]],
    silent: bool = False,
) -> CellRun:
    """Run ``code`` (and ``expression`` after it) and read until it is done,
    past ``timeout`` interrupt it, past ``grace`` more report it lost."""
    started = time.perf_counter()
    exprs = {"r": expression} if expression else {}
    cell = _Cell(
        kc.execute(code, silent=silent, store_history=False, user_expressions=exprs), limit
    )
    iopub, shell = kc.iopub_channel, kc.shell_channel
    poller = zmq.Poller()
    poller.register(iopub.socket, zmq.POLLIN)
    poller.register(shell.socket, zmq.POLLIN)
    for monitor in monitors:
        poller.register(monitor, zmq.POLLIN)
    deadline, timed_out = started + timeout, False
    ends: float | None = None  # once one of idle and reply came: when to stop waiting

    def done(lost: str | None = None) -> CellRun:
        reply = cell.reply or {}
        value = reply.get("user_expressions")
        return CellRun(
            output=cell.out.getvalue(),
            dropped=cell.out.dropped,
            error=cell.error(),
            timed_out=timed_out,
            duration_s=time.perf_counter() - started,
            status=_text(reply.get("status")) or None,
            value=value.get("r") if isinstance(value, dict) else None,
            lost=lost,
        )

    while not (cell.idle and cell.reply is not None):
        now = time.perf_counter()
        if ends is None and (cell.idle or cell.reply is not None):
            ends = now + (KERNEL_REPLY_TIMEOUT_S if cell.idle else KERNEL_DRAIN_S)
        if ends is not None and now >= ends:
            break
        if now >= deadline:
            if timed_out:  # the interrupt did not land: the kernel is stuck
                return done("did not stop after an interrupt")
            timed_out = True
            interrupt()
            deadline = now + grace
        wait = min(KERNEL_POLL_S, max(min(deadline, ends or deadline) - now, 0.001))
        ready = dict(poller.poll(max(1, int(wait * 1000))))
        if not ready:
            if not alive():
                return done("died")
            continue
        if any(monitor in ready for monitor in monitors):
            return done("died" if _dies(alive) else _BROKE)
        if iopub.socket in ready:
            cell.iopub(_receive(iopub))
        if shell.socket in ready:
            cell.shell(_receive(shell))
    return done()


def _answers(msg: Any, msg_id: str, msg_type: str) -> dict[str, Any] | None:
    """The message's content when it is a ``msg_type`` answering ``msg_id``."""
    if not isinstance(msg, dict) or msg.get("msg_type") != msg_type:
        return None
    parent, content = msg.get("parent_header"), msg.get("content")
    if not isinstance(parent, dict) or parent.get("msg_id") != msg_id:
        return None
    return content if isinstance(content, dict) else None


def wait_ready(kc: Any, timeout: float, alive: Callable[[], bool]) -> None:
    """Return once the kernel answered a ``kernel_info`` request on shell and
    its idle status for it came on iopub: both channels work and nothing
    older is queued. jupyter_client's ``wait_for_ready`` waits for 0.2 s of
    silence on iopub besides, a third of a kernel's start; this does not.
    Raises RuntimeError when the kernel dies or ``timeout`` passes."""
    deadline = time.perf_counter() + timeout
    iopub, shell = kc.iopub_channel, kc.shell_channel
    poller = zmq.Poller()
    poller.register(iopub.socket, zmq.POLLIN)
    poller.register(shell.socket, zmq.POLLIN)
    while True:
        msg_id = kc.kernel_info()
        replied = idle = False
        retry = min(time.perf_counter() + KERNEL_READY_RETRY_S, deadline)
        while not (replied and idle) and (now := time.perf_counter()) < retry:
            ready = dict(poller.poll(max(1, int((retry - now) * 1000))))
            if shell.socket in ready:
                replied |= _answers(_receive(shell), msg_id, "kernel_info_reply") is not None
            if iopub.socket in ready:
                status = _answers(_receive(iopub), msg_id, "status")
                idle |= status is not None and status.get("execution_state") == "idle"
        if replied and idle:
            return
        if not alive():
            raise RuntimeError("the kernel died before it answered kernel_info")
        if time.perf_counter() >= deadline:
            raise RuntimeError(f"the kernel did not answer kernel_info in {timeout:g} s")
