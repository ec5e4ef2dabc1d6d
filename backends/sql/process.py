"""The host's side of the DuckDB worker process (:mod:`polyrlm.backends.sql.worker`).

:class:`Worker` starts the process and exchanges frames with it, each
request under a deadline and each reply read only up to a size fixed
before it is read. :class:`WorkerDatabase` is what the environment uses: it
ships the context (:mod:`polyrlm.backends.sql.transfer`), checks every
reply as data from the model's side (a result, the state, the guide: types,
sizes, the answer's size), and replaces a worker that died, overran its
deadline or sent a malformed reply: a new one loads the context again and
the model is told that its tables were lost. The answer is kept here, on
the host, so a restart does not lose it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from polyrlm.backends.sql.engine import Settings
from polyrlm.backends.sql.limits import (
    SQL_ANSWER_MAX_CHARS,
    SQL_ERROR_MAX_CHARS,
    SQL_GUIDE_MAX_CHARS,
    SQL_NAME_MAX_CHARS,
    SQL_STATE_MAX_ITEMS,
    SQL_WORKER_ENV_KEEP,
    SQL_WORKER_ENV_SET,
    SQL_WORKER_KILL_GRACE_S,
    SQL_WORKER_REQUEST_TIMEOUT_S,
    cut_text,
)
from polyrlm.backends.sql.transfer import ship
from polyrlm.backends.sql.worker import FRAME_HEADER, send_frame
from polyrlm.errors import BackendUnavailable, ConfigError, EnvironmentCrashed
from polyrlm.records import ExecResult, State, VarInfo

__all__ = ["Worker", "WorkerDatabase", "WorkerFailed", "WorkerLost", "reply_max_bytes"]

#: Characters of room for what the runner adds around a capped error.
_ERROR_ROOM = 1_000


class WorkerLost(Exception):
    """The worker died, overran its deadline, or sent a malformed reply."""

    def __init__(self, why: str, *, timed_out: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.timed_out = timed_out


class WorkerFailed(Exception):
    """The worker answered a request with an error (e.g. a context it cannot load)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def reply_max_bytes(limit_chars: int) -> int:
    """Bytes a reply may take: everything it may hold, 6 bytes a character
    (a JSON escape), and 1 MiB for the rest."""
    chars = limit_chars + SQL_ERROR_MAX_CHARS + SQL_ANSWER_MAX_CHARS + SQL_GUIDE_MAX_CHARS
    chars += SQL_STATE_MAX_ITEMS * 2 * SQL_NAME_MAX_CHARS
    return 6 * chars + 2**20


class Worker:
    """One worker process and the host's end of its socket."""

    def __init__(self, settings: Settings, bridge_env: Mapping[str, str], timeout_s: float) -> None:
        self.max_bytes = 2**20
        parent, child = socket.socketpair()
        env = {k: os.environ[k] for k in SQL_WORKER_ENV_KEEP if k in os.environ}
        env.update(SQL_WORKER_ENV_SET)
        env.update(bridge_env)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "polyrlm.backends.sql.worker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                env=env,
                cwd=settings.folder,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # nothing DuckDB prints reaches the host's
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C for the host is the host's to handle
            )
        finally:
            child.close()
        self.sock = parent
        self._lock = threading.Lock()
        try:
            self.request({"settings": asdict(settings)}, timeout_s)
        except BaseException:
            self.kill()
            raise

    def _read(self, size: int, deadline: float) -> bytes:
        data = bytearray()
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            chunk = self.sock.recv(min(size - len(data), 2**20))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return bytes(data)

    def request(self, message: dict[str, Any], timeout_s: float, max_bytes: int = 2**20) -> Any:
        """Send ``message``; the reply's ``ok`` value. :class:`WorkerFailed`
        when the worker reports an error, :class:`WorkerLost` when it is gone."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            try:
                self.sock.settimeout(timeout_s)
                send_frame(self.sock, message)
                (size,) = FRAME_HEADER.unpack(self._read(FRAME_HEADER.size, deadline))
                if size > max_bytes:
                    raise WorkerLost(f"the DuckDB worker sent a reply of {size:,} bytes")
                body = self._read(size, deadline)
            except TimeoutError:
                raise WorkerLost(
                    f"the DuckDB worker did not answer within {timeout_s:g} s", timed_out=True
                ) from None
            except OSError:
                raise WorkerLost(self._ended()) from None
        try:
            reply = json.loads(body)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not ("ok" in reply or "error" in reply):
            raise WorkerLost("the DuckDB worker sent a malformed reply")
        if "error" in reply:
            kind, text = str(reply.get("error"))[:100], str(reply.get("message"))
            raise WorkerFailed(kind, cut_text(text, SQL_ERROR_MAX_CHARS, "error"))
        return reply["ok"]

    def _ended(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(1.0)
        code = self.process.poll()
        if code is None:
            return "the DuckDB worker's connection broke"
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        return f"the DuckDB worker process ended ({how})"

    def kill(self) -> None:
        """Stop the process now (SIGKILL); safe from any thread, idempotent."""
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(OSError):
            self.sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5.0)


def _answer(value: Any) -> Any:
    if len(json.dumps(value, ensure_ascii=False)) > SQL_ANSWER_MAX_CHARS:
        raise WorkerLost("the DuckDB worker sent an answer over the size limit")
    return value


def checked_result(data: Any, limit_chars: int) -> ExecResult:
    """A worker's :class:`ExecResult`, checked as data from the model's side."""
    try:
        result = ExecResult.model_validate(data)
    except ValidationError:
        raise WorkerLost("the DuckDB worker sent a malformed result") from None
    if len(result.output) > limit_chars or result.restarted or result.truncated_chars < 0:
        raise WorkerLost("the DuckDB worker sent a result over its limits")
    if result.error is not None and len(result.error) > SQL_ERROR_MAX_CHARS + _ERROR_ROOM:
        raise WorkerLost("the DuckDB worker sent an error over its limits")
    answer = _answer(result.answer) if result.answer_ready else None
    return result.model_copy(update={"answer": answer})


def checked_state(data: Any) -> State:
    try:
        state = State.model_validate(data)
    except ValidationError:
        raise WorkerLost("the DuckDB worker sent a malformed state") from None
    long = any(
        len(v.name) > SQL_NAME_MAX_CHARS or len(v.type) > SQL_NAME_MAX_CHARS
        for v in state.variables
    )
    if len(state.variables) > SQL_STATE_MAX_ITEMS or long:
        raise WorkerLost("the DuckDB worker sent a state over its limits")
    return state


class WorkerDatabase:
    """The environment's database, in a worker process."""

    def __init__(
        self,
        settings: Settings,
        memory_bytes: int,
        bridge_env: Mapping[str, str],
        start_timeout_s: float,
    ) -> None:
        self.settings = settings
        self.memory_bytes = memory_bytes
        self.bridge_env = dict(bridge_env)
        self.start_timeout_s = start_timeout_s
        self.answer: Any = None
        self.ready = False
        self._plan: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()  # one request at a time; held while a block runs
        self._closed = False
        self.worker: Worker | None = None
        try:
            self.worker = Worker(settings, self.bridge_env, start_timeout_s)
        except WorkerFailed as exc:  # the worker's own reason: a bad setting, old DuckDB
            known = {"ConfigError": ConfigError, "BackendUnavailable": BackendUnavailable}
            raise known.get(exc.kind, EnvironmentCrashed)(exc.message) from None
        except (WorkerLost, OSError) as exc:
            raise EnvironmentCrashed(f"the DuckDB worker did not start: {exc}") from None

    def _live(self) -> Worker:
        if self.worker is None:
            raise EnvironmentCrashed("the sql environment is closed")
        return self.worker

    def _load(self, worker: Worker) -> None:
        message = {"op": "load", "plan": self._plan, "memory_bytes": self.memory_bytes}
        try:
            worker.request(message, SQL_WORKER_REQUEST_TIMEOUT_S)
        except WorkerFailed as exc:
            raise ConfigError(exc.message if exc.kind == "ConfigError" else str(exc)) from None
        except WorkerLost as exc:
            raise ConfigError(f"cannot load the context into DuckDB: {exc.why}") from None

    def load(self, context: Any) -> None:
        self._plan = ship(context, Path(self.settings.folder) / "context")
        with self._lock:
            self._load(self._live())

    def _restart(self) -> None:
        """A new worker with the context loaded again (the old one killed)."""
        if self.worker is not None:
            self.worker.kill()
        self.worker = None
        if self._closed:  # close() killed it: nothing to restart
            return
        try:
            self.worker = Worker(self.settings, self.bridge_env, self.start_timeout_s)
            self._load(self.worker)
        except (WorkerLost, WorkerFailed, ConfigError, OSError) as exc:
            raise EnvironmentCrashed(
                f"the DuckDB worker could not be started again: {exc}"
            ) from None

    def execute(
        self, code: str, timeout_s: float, limit_chars: int, show_result: bool = True
    ) -> ExecResult:
        started = time.perf_counter()
        message = {"op": "execute", "code": code, "timeout_s": timeout_s}
        message["show_result"] = show_result
        with self._lock:
            try:
                data = self._live().request(
                    {**message, "limit_chars": limit_chars},
                    timeout_s + SQL_WORKER_KILL_GRACE_S,
                    reply_max_bytes(limit_chars),
                )
                result = checked_result(data, limit_chars)
            except WorkerFailed as exc:  # polyrlm's fault, not the SQL's: say so
                return ExecResult(error=str(exc), duration_s=time.perf_counter() - started)
            except WorkerLost as lost:
                self._restart()
                why = f"TimeoutError: {lost.why}" if lost.timed_out else lost.why
                if self._closed:
                    why = "the environment was closed while the block ran"
                return ExecResult(
                    error=f"{why}. DuckDB was started anew with the context loaded again: "
                    "your tables and variables are lost.",
                    duration_s=time.perf_counter() - started,
                    restarted=True,
                    timed_out=lost.timed_out,
                    answer_ready=self.ready,
                    answer=self.answer if self.ready else None,
                )
        if result.answer_ready:
            self.answer, self.ready = result.answer, True
        return result

    def state(self) -> State:
        # A block still running (an abandoned execute): the answer is known here.
        if not self._lock.acquire(timeout=SQL_WORKER_KILL_GRACE_S / 10):
            return State(answer=self.answer, answer_ready=self.ready)
        variables: tuple[VarInfo, ...] = ()
        try:
            data = self._live().request(
                {"op": "state"}, SQL_WORKER_REQUEST_TIMEOUT_S, reply_max_bytes(0)
            )
            variables = checked_state(data).variables
        except WorkerFailed:  # polyrlm's fault: the state is only less complete
            pass
        except WorkerLost:
            self._restart()
        finally:
            self._lock.release()
        return State(variables=variables, answer=self.answer, answer_ready=self.ready)

    def guide(self, timeout_s: float, compact: bool = False) -> str:
        with self._lock:
            try:
                guide = self._live().request(
                    {"op": "guide", "timeout_s": timeout_s, "compact": compact},
                    SQL_WORKER_REQUEST_TIMEOUT_S,
                    reply_max_bytes(0),
                )
            except (WorkerLost, WorkerFailed) as exc:
                raise EnvironmentCrashed(f"the DuckDB worker gave no guide: {exc}") from None
        if not isinstance(guide, str) or len(guide) > SQL_GUIDE_MAX_CHARS:
            raise EnvironmentCrashed("the DuckDB worker sent a malformed guide")
        return guide

    def close(self) -> None:
        self._closed = True
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.kill()  # even mid-statement: its process goes, nothing else
