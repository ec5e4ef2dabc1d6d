"""The fake provider server in a subprocess (its own GIL): ``FakeServerProcess``.

It runs ``python -m polyrlm.testing.fake_server`` (whose flags mirror the server's options) and
waits for the ``READY <base_url>`` line that command prints once listening.
"""

from __future__ import annotations

import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import IO

from polyrlm.testing.fake_faults import Fault

__all__ = ["CLI_MODULE", "FakeServerProcess"]

CLI_MODULE = "polyrlm.testing.fake_server"  # not its __name__: that is "__main__" under -m
#: How long the child may take to import and start listening.
READY_TIMEOUT_S = 30.0
#: How long a SIGTERM may take before the child is killed.
TERMINATE_TIMEOUT_S = 10.0


class FakeServerProcess:
    """Runs the CLI in a subprocess; ``base_url`` is valid inside the ``with`` block.

    ``faults`` are passed as ``--fault`` specs (``Fault.spec``: no extra headers), served one
    per request; ``window_tokens``, ``usage_factor`` and ``extra_usage_tokens`` as the
    server's options of those names.
    """

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        window_tokens: int | None = None,
        faults: Sequence[Fault] = (),
        usage_factor: float = 1.0,
        extra_usage_tokens: int = 0,
    ) -> None:
        self.latency_s = latency_s
        self.window_tokens = window_tokens
        self.faults = list(faults)
        self.usage_factor = usage_factor
        self.extra_usage_tokens = extra_usage_tokens
        self.base_url = ""
        self.process: subprocess.Popen[str] | None = None
        self.returncode: int | None = None
        self._stderr: IO[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", CLI_MODULE, "--latency", repr(self.latency_s)]
        if self.window_tokens is not None:
            cmd += ["--window-tokens", str(self.window_tokens)]
        for fault in self.faults:
            cmd += ["--fault", fault.spec()]
        if self.usage_factor != 1.0:
            cmd += ["--usage-factor", repr(self.usage_factor)]
        if self.extra_usage_tokens:
            cmd += ["--extra-usage-tokens", str(self.extra_usage_tokens)]
        return cmd

    def __enter__(self) -> FakeServerProcess:
        cmd = self.command()  # first: a fault without a command-line form raises here
        # stderr goes to a file: a pipe nobody drains could fill up and stall the server.
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        try:
            self.base_url = self._read_ready(self.process, timeout_s=READY_TIMEOUT_S)
        except BaseException:
            self._shutdown()
            raise
        return self

    @property
    def anthropic_base_url(self) -> str:
        """The ``api_base`` for litellm's ``anthropic/`` models (it appends ``/v1/messages``)."""
        return self.base_url.removesuffix("/v1")

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
            self.returncode = proc.wait(timeout=TERMINATE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            self.returncode = proc.wait()
        for stream in (proc.stdout, self._stderr):
            if stream is not None:
                stream.close()

    def __exit__(self, *exc_info: object) -> None:
        self._shutdown()
