"""The client side of the host bridge: standard library only.

Out-of-process environments run this file: a Jupyter kernel executes its
source to get ``llm_query``, ``llm_batch``, ``rlm_query``, ``rlm_batch``;
a shell runs it as a command (``python bridge_client.py llm PROMPT``). It
finds the bridge through ``POLYRLM_BRIDGE`` (the socket path) and
``POLYRLM_BRIDGE_TOKEN``. Nothing here imports polyrlm: the host's
package, its memory and its credentials stay on the host.

Each call is one connection (the protocol is in :mod:`polyrlm.bridge`):
the token line, the host's greeting, one request, its reply. A request
longer than the greeting's ``max_request_bytes`` is refused here, before
it is sent. While the host is at its connection limit (a ``Busy`` reply,
given before anything is read) the call waits and retries, for at most
:data:`BUSY_WAIT_S`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from typing import Any

__all__ = [
    "BUSY_RETRY_S",
    "BUSY_WAIT_S",
    "SubCallError",
    "SubCallFailure",
    "call",
    "call_tool",
    "call_tools",
    "llm_batch",
    "llm_query",
    "main",
    "rlm_batch",
    "rlm_query",
]


#: Seconds a call keeps retrying while the host bridge is at its connection limit.
BUSY_WAIT_S = 60.0
#: Seconds between those retries: the first, and the longest (it doubles).
BUSY_RETRY_S = (0.01, 0.5)


class SubCallError(Exception):
    """A sub-call failed (after the host's retries) or was refused."""


class _Busy(SubCallError):
    """The host refused the connection unread (too many open): safe to retry."""


class SubCallFailure(str):
    """A failed item of a batch: a string starting with ``[sub-call failed:``;
    ``.error`` says why. The other items of the batch are unharmed."""

    error: str

    def __new__(cls, error: str) -> SubCallFailure:
        self = super().__new__(cls, f"[sub-call failed: {error}]")
        self.error = error
        return self


def call(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One request to the host; returns the reply object or raises."""
    path = os.environ.get("POLYRLM_BRIDGE")
    token = os.environ.get("POLYRLM_BRIDGE_TOKEN")
    if not path or not token:
        raise SubCallError("no host bridge here (POLYRLM_BRIDGE is not set)")
    request = {"id": 1, "method": method, "params": params}
    try:
        data = json.dumps(request, ensure_ascii=False).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        raise SubCallError(f"arguments must be JSON data (str, list, dict): {exc}") from None
    deadline = time.monotonic() + BUSY_WAIT_S
    pause, longest = BUSY_RETRY_S
    while True:
        try:
            return _exchange(path, token.encode() + b"\n", data)
        except _Busy as exc:
            if time.monotonic() + pause > deadline:
                raise SubCallError(
                    f"the host bridge stayed busy for {BUSY_WAIT_S:g} s: {exc}"
                ) from None
        time.sleep(pause)
        pause = min(2 * pause, longest)


def _exchange(path: str, token_line: bytes, data: bytes) -> dict[str, Any]:
    """One connection: the token, the host's greeting, the request, its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
            with sock.makefile("rb") as stream:
                _send(sock, token_line)
                limit = _reply(stream.readline()).get("max_request_bytes")
                if isinstance(limit, int) and len(data) > limit:
                    raise SubCallError(
                        f"the request takes {len(data):,} bytes; the host bridge takes at most "
                        f"{limit:,} (split the batch, or pass less context)"
                    )
                _send(sock, data)
                return _reply(stream.readline())
        except OSError as exc:
            raise SubCallError(f"the host bridge is unreachable: {exc}") from None


def _send(sock: socket.socket, data: bytes) -> None:
    # The host may have refused and closed first: its reply line, read next, says why.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def _reply(line: bytes) -> dict[str, Any]:
    if not line:
        raise SubCallError("the host bridge closed the connection without a reply")
    try:
        reply: dict[str, Any] = json.loads(line)
    except ValueError:
        raise SubCallError(f"the host bridge sent a malformed reply: {line[:80]!r}") from None
    if "error" in reply:
        error = reply["error"]
        kind = _Busy if error.get("type") == "Busy" else SubCallError
        raise kind(f"{error.get('type')}: {error.get('message')}")
    return reply


def _batch(reply: dict[str, Any]) -> list[str]:
    failures = reply.get("failures") or {}
    return [
        SubCallFailure(failures[str(i)]) if str(i) in failures else text
        for i, text in enumerate(reply["result"])
    ]


def _typed(params: dict[str, Any], schema: Any) -> dict[str, Any]:
    if schema is not None:
        params["schema"] = schema
    return params


def llm_query(prompt: str, model: str | None = None, schema: Any = None) -> Any:
    """Ask a sub-model; raises :class:`SubCallError` on failure. With a JSON
    Schema ``schema`` the reply is JSON data validated against it."""
    result = call("llm_query", _typed({"prompt": prompt, "model": model}, schema))["result"]
    return str(result) if schema is None else result


def llm_batch(prompts: list[str], model: str | None = None, schema: Any = None) -> list[Any]:
    """Many sub-model calls at once, concurrently; replies in input order."""
    return _batch(call("llm_batch", _typed({"prompts": list(prompts), "model": model}, schema)))


def call_tool(name: str, arguments: dict[str, Any]) -> Any:
    """Call the user's tool ``name`` on the host; its result as JSON data."""
    return call("call_tool", {"name": name, "arguments": arguments})["result"]


def call_tools(name: str, arguments: list[dict[str, Any]]) -> list[Any]:
    """Many calls of one tool at once; results in input order."""
    return list(call("call_tools", {"name": name, "arguments": list(arguments)})["result"])


def rlm_query(prompt: str, context: Any = None) -> str:
    """A child recursive model over ``context`` (a plain sub-call at the depth limit)."""
    return str(call("rlm_query", {"prompt": prompt, "context": context})["result"])


def rlm_batch(prompts: list[str], contexts: list[Any] | None = None) -> list[str]:
    """Many child recursive models at once; replies in input order."""
    return _batch(call("rlm_batch", {"prompts": list(prompts), "contexts": contexts}))


def _json_argument(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise SubCallError(f"{what} must be JSON, not {text[:80]!r}") from None


#: ``llm PROMPT`` with nothing (or only blanks) on stdin fails with this.
NO_INPUT_ERROR = (
    "llm: no text came on stdin, so the sub-model would only guess. Pipe in the text to "
    'read, e.g. grep -i "word" "$CONTEXT" | llm "What is ...?" (a pipe that finds nothing '
    "sends nothing); to ask with no text, say llm --no-input PROMPT"
)


def main(argv: list[str] | None = None) -> int:
    """``llm [--schema JSON] [--no-input] PROMPT`` (the text to read on stdin,
    appended after a blank line; without ``--no-input`` an empty stdin is an
    error, :data:`NO_INPUT_ERROR`),
    ``llm_batch`` (a JSON string per input line, a JSON string per output
    line), ``rlm PROMPT [FILE]``, ``tool NAME [JSON]`` (the result as JSON)."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(
            "usage: llm [--schema JSON] [--no-input] PROMPT | llm_batch | rlm PROMPT [FILE] | "
            "tool NAME [JSON]",
            file=sys.stderr,
        )
        return 2
    command, rest = args[0], args[1:]
    try:
        if command == "llm":
            schema = None
            if rest[:1] == ["--schema"]:  # typed: prints the reply as JSON
                schema, rest = (
                    _json_argument(rest[1] if len(rest) > 1 else "", "--schema"),
                    rest[2:],
                )
            alone = rest[:1] == ["--no-input"]
            prompt = " ".join(rest[1:] if alone else rest)
            piped = "" if alone or sys.stdin.isatty() else sys.stdin.read()
            if not alone and not piped.strip():
                # Asked about text that never came (an empty grep, no pipe at
                # all): the sub-model would only guess, and be believed.
                raise SubCallError(NO_INPUT_ERROR)
            if piped:
                prompt = f"{prompt}\n\n{piped}" if prompt else piped
            reply = llm_query(prompt, schema=schema)
            print(reply if schema is None else json.dumps(reply, ensure_ascii=False))
        elif command == "tool":
            if not rest:
                raise SubCallError("usage: tool NAME [JSON_ARGUMENTS] (or the JSON on stdin)")
            text = rest[1] if len(rest) > 1 else ("" if sys.stdin.isatty() else sys.stdin.read())
            arguments = _json_argument(text, f"the arguments of {rest[0]}") if text.strip() else {}
            print(json.dumps(call_tool(rest[0], arguments), ensure_ascii=False))
        elif command == "llm_batch":
            prompts = []
            for number, line in enumerate(sys.stdin, 1):
                if line.strip():
                    try:
                        prompts.append(str(json.loads(line)))
                    except ValueError:
                        raise SubCallError(
                            f"input line {number} is not a JSON string: {line[:80]!r} "
                            "(llm_batch reads one JSON string per line)"
                        ) from None
            for reply in llm_batch(prompts):
                print(json.dumps(str(reply), ensure_ascii=False))
        elif command == "rlm":
            try:
                context = open(rest[1]).read() if len(rest) > 1 else None  # noqa: SIM115
            except OSError as exc:
                raise SubCallError(f"cannot read the context file: {exc}") from None
            print(rlm_query(rest[0] if rest else "", context))
        else:
            print(f"unknown command {command!r}", file=sys.stderr)
            return 2
    except SubCallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
