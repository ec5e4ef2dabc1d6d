"""One persistent bash process and the protocol that runs commands in it.

The shell (``bash -i`` without a terminal: an interactive shell, so that a
SIGINT aborts whatever it is running, a builtin loop included, and returns it
to its input) reads control lines on its stdin. Each run writes one line that
sources a block file and one that prints a sentinel, ``<token> <status>``,
on both its stdout and its stderr (through file descriptors 98 and 99, kept
aside at start-up). The run ends when both sentinels are read; everything
before them is the block's output. A fresh random token per run means no
output can fake the end.

Output is read as it comes, from both pipes in one thread (so stdout and
stderr interleave as they arrive) and kept up to a limit; the rest is read
and counted, never stored. Bytes that arrive after a sentinel (a background
job's) start the next run's output.

At the timeout the shell is interrupted (:meth:`ShellProcess.interrupt`)
and every process it started gets SIGINT, then SIGKILL every
:data:`SHELL_KILL_ROUND_S`, until the sentinel comes; a shell still busy
after the grace period is reported stuck (the caller restarts it).
"""

from __future__ import annotations

import codecs
import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from polyrlm.pycell import Sink
from polyrlm.sandbox import (
    SandboxWatch,
    deprioritize,
    descendants,
    find_payload,
    kill_and_wait,
    send,
    snapshot,
)

__all__ = [
    "SHELL_DRAIN_READS",
    "SHELL_KILL_ROUND_S",
    "SHELL_POLL_S",
    "SHELL_READ_CHUNK_BYTES",
    "SHELL_STDERR_TAIL_CHARS",
    "SHELL_STOP_TIMEOUT_S",
    "RunOutcome",
    "ShellProcess",
    "members",
]

#: Seconds between checks that the shell is alive while nothing is printed.
SHELL_POLL_S = 0.1
#: Seconds between two rounds of SIGKILL to a timed-out block's processes.
SHELL_KILL_ROUND_S = 0.25
#: Bytes read from a pipe at once.
SHELL_READ_CHUNK_BYTES = 256 * 1024
#: Characters of a run's stderr kept for its error message (the last ones).
SHELL_STDERR_TAIL_CHARS = 2_000
#: Seconds to wait for a killed shell to be reaped.
SHELL_STOP_TIMEOUT_S = 5.0
#: Reads at most of what a dead shell left in its pipes (its orphans may
#: still be writing: this bounds the drain).
SHELL_DRAIN_READS = 64


def members(root: int, group: int, keep: Iterable[int]) -> set[int]:
    """Processes under ``root`` or in process group ``group``, minus ``keep``:
    a block's commands, its background jobs and its orphans (reparented to
    the sandbox's init, or still in the shell's group)."""
    procs = snapshot()
    found = descendants(root, procs) | {pid for pid, (_, pg) in procs.items() if pg == group}
    return found - set(keep)


@dataclass(frozen=True)
class RunOutcome:
    """What one run of a control line gave."""

    output: str
    stderr_tail: str
    dropped_chars: int
    #: The block's exit status; None when no sentinel came (died or stuck).
    status: int | None
    timed_out: bool = False
    #: The shell process exited (its exit code, if known, is in ``exit_code``).
    died: bool = False
    exit_code: int | None = None
    #: The shell did not stop within the grace period after the timeout.
    stuck: bool = False


class _Stream:
    """One pipe during a run: raw bytes not yet scanned, a decoder, a done flag."""

    def __init__(self, carry: bytes) -> None:
        self.buf = carry
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.done = False
        self.status: int | None = None


class _Run:
    """The output of one run: both pipes scanned for the marker, text capped."""

    def __init__(self, marker: bytes, carry: dict[int, bytes], err_fd: int, limit: int) -> None:
        self.marker = marker
        self.streams = {fd: _Stream(data) for fd, data in carry.items()}
        self.err_fd = err_fd
        self.sink = Sink(limit)
        self.tail = ""

    @property
    def done(self) -> bool:
        return all(s.done for s in self.streams.values())

    def _commit(self, fd: int, data: bytes, final: bool = False) -> None:
        text = self.streams[fd].decoder.decode(data, final)
        if text:
            self.sink.write(text)
            if fd == self.err_fd:
                self.tail = (self.tail + text)[-SHELL_STDERR_TAIL_CHARS:]

    def feed(self, fd: int, data: bytes) -> None:
        """Take bytes read from ``fd``; keep those that cannot be part of the
        marker; on the marker's whole line, mark the stream done."""
        stream = self.streams[fd]
        stream.buf += data
        if stream.done:  # bytes after the sentinel: the next run's
            return
        at = stream.buf.find(self.marker)
        if at < 0:
            keep = len(self.marker) - 1  # a marker may be cut across two reads
            if len(stream.buf) > keep:
                self._commit(fd, stream.buf[:-keep])
                stream.buf = stream.buf[-keep:]
            return
        if at:
            self._commit(fd, stream.buf[:at])
            stream.buf = stream.buf[at:]
        end = stream.buf.find(b"\n")
        if end < 0:  # the status has not arrived yet
            return
        self._commit(fd, b"", final=True)
        status = stream.buf[len(self.marker) : end].strip()
        stream.status = int(status) if status.lstrip(b"-").isdigit() else None
        stream.buf = stream.buf[end + 1 :]
        stream.done = True

    def finish(self) -> dict[int, bytes]:
        """Flush what was held back; return each pipe's bytes for the next run."""
        carry = {}
        for fd, stream in self.streams.items():
            if stream.done:
                carry[fd] = stream.buf
            else:
                self._commit(fd, stream.buf, final=True)
                carry[fd] = b""
        return carry

    def status(self) -> int | None:
        values = [s.status for s in self.streams.values() if s.status is not None]
        return values[0] if values else None


class ShellProcess:
    """A running shell: its process, pipes, and the processes it started.

    ``launcher`` is the name of the program that wraps the shell (``bwrap``),
    or None when ``argv`` starts bash itself. Not thread-safe: one thread
    drives it (the environment's own).
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        launcher: str | None,
        *,
        preexec: Callable[[], None] | None = None,
        watch: Callable[[int], SandboxWatch] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own process group: ours is never signalled
            preexec_fn=preexec,
        )
        #: Kills the sandbox past its caps (None unsandboxed).
        self.watch = watch(self.proc.pid) if watch is not None else None
        self.launcher = launcher
        self.group = self.proc.pid
        self.shell_pid = self.proc.pid
        self._keep: set[int] = {self.proc.pid}
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self._stdin = self.proc.stdin.fileno()
        self._fds = (self.proc.stdout.fileno(), self.proc.stderr.fileno())
        for fd in self._fds:
            os.set_blocking(fd, False)
        self._selector = selectors.DefaultSelector()
        for fd in self._fds:
            self._selector.register(fd, selectors.EVENT_READ)
        self._carry = {fd: b"" for fd in self._fds}
        self._stopped = False

    def locate_shell(self) -> None:
        """Find the shell under the launcher (after the shell has answered once)."""
        if self.launcher is not None:
            self.shell_pid, above = find_payload(self.proc.pid, self.launcher)
            self._keep = above | {self.proc.pid}
            deprioritize(self.shell_pid)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def block_pids(self) -> set[int]:
        """Every process the shell started (background jobs and orphans too)."""
        return members(self.proc.pid, self.group, self._keep | {self.shell_pid})

    # -- one run --

    def run(self, line: str, token: str, timeout: float, grace: float, limit: int) -> RunOutcome:
        """Send ``line`` (control commands ending with the sentinel for ``token``)
        and read until both sentinels, the timeout plus ``grace``, or death."""
        run = _Run(token.encode(), self._carry, self._fds[1], limit)
        for fd in self._fds:  # bytes carried over from the last run (no marker: new token)
            run.feed(fd, b"")
        timed_out = False

        def outcome(
            status: int | None, *, died: bool = False, exit_code: int | None = None
        ) -> RunOutcome:
            self._carry = run.finish()
            return RunOutcome(
                output=run.sink.getvalue(),
                stderr_tail=run.tail,
                dropped_chars=run.sink.dropped,
                status=status,
                timed_out=timed_out,
                died=died,
                exit_code=exit_code,
                stuck=timed_out and status is None and not died,
            )

        with contextlib.suppress(BrokenPipeError):  # it died: the loop reads its last words
            os.write(self._stdin, line.encode())
        deadline = time.monotonic() + timeout
        next_kill = hard_stop = float("inf")
        while not run.done:
            now = time.monotonic()
            if not timed_out and now >= deadline:
                timed_out = True
                self.interrupt()
                next_kill, hard_stop = now + SHELL_KILL_ROUND_S, now + grace
            elif now >= hard_stop:
                return outcome(None)
            elif now >= next_kill:
                send(self.block_pids(), signal.SIGKILL)
                next_kill = now + SHELL_KILL_ROUND_S
            wake = min(deadline if not timed_out else min(next_kill, hard_stop), now + SHELL_POLL_S)
            self._read(run, max(wake - now, 0.0))
            if not self.alive:
                for _ in range(SHELL_DRAIN_READS):  # what it wrote before it died
                    if not self._read(run, 0.0):
                        break
                return outcome(None, died=True, exit_code=self._reap())
        if timed_out:  # background jobs ignore SIGINT: what is left goes now
            kill_and_wait(self.block_pids(), SHELL_KILL_ROUND_S)
        return outcome(run.status())

    def _read(self, run: _Run, wait: float) -> int:
        """Read what the pipes hold, waiting up to ``wait`` s; how many were ready."""
        if not self._selector.get_map():  # both pipes closed: just wait
            time.sleep(wait)
            return 0
        events = self._selector.select(wait)
        for key, _ in events:
            fd = int(key.fd)
            try:
                data = os.read(fd, SHELL_READ_CHUNK_BYTES)
            except BlockingIOError:
                continue
            if data:
                run.feed(fd, data)
            else:  # closed: every writer is gone
                self._selector.unregister(fd)
        return len(events)

    def interrupt(self) -> None:
        """SIGUSR1 to the shell, SIGINT to what it started.

        The shell traps SIGUSR1 by sending itself SIGINT, which makes an
        interactive shell abort its whole command line, functions included.
        A trap runs between commands, so this lands even after a child that
        ignored SIGINT is killed (bash goes on with the next command when a
        child dies of anything but SIGINT, even if the shell got a SIGINT).
        """
        send([self.shell_pid], signal.SIGUSR1)
        send(self.block_pids(), signal.SIGINT)

    # -- the end --

    def _reap(self) -> int | None:
        try:
            return self.proc.wait(SHELL_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None

    def kill_tree(self) -> None:
        """SIGKILL the shell, its launcher and everything they started. Safe
        from any thread, any number of times."""
        if self._stopped:
            return
        if self.watch is not None:  # the sandbox's init: every process in it at once
            self.watch.kill()
        pids = members(self.proc.pid, self.group, ()) | {self.proc.pid}
        send(pids, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.group, signal.SIGKILL)

    def stop(self) -> None:
        """Kill everything, reap the shell, close the pipes. Idempotent."""
        if self._stopped:
            return
        self.kill_tree()
        self._reap()
        if self.watch is not None:
            self.watch.stop()
        self._stopped = True
        self._selector.close()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
