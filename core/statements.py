"""Where the complete top-level statements of a block being written end, for
pipelined turns (:mod:`polyrlm.pipeline`): Python's, by :mod:`ast`.

A simple statement (an assignment, a call, an import, ...) is complete at
the end of its line once the lines so far parse: nothing on a later line can
extend it. A compound one (``if``, ``for``, ``try``, ``def``, ``with``, ...)
is complete only once a later line starts at column 0 with something that
cannot continue it (not ``else``, ``elif``, ``except``, ``finally``, nor a
closing bracket, nor a comment). Trailing bare expressions wait for a
statement that is not one: a block shows the value of its last expression
only, so an expression that might turn out to be the last is never run
early, and no part ends with one.
"""

from __future__ import annotations

import ast
import re
import threading

__all__ = ["python_ready"]

#: First words of a line that continue the statement above it.
_CONTINUES = re.compile(r"(else|elif|except|finally)\b|[)\]}]")
#: Statements that end with their line: no later line can extend them.
_SIMPLE = (
    ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Import, ast.ImportFrom,
    ast.Pass, ast.Break, ast.Continue, ast.Return, ast.Raise, ast.Delete, ast.Global,
    ast.Nonlocal, ast.Assert,
)  # fmt: skip
# CPython 3.11's AST builder is not safe against another thread building one at
# the same time (polyrlm.pycell takes the same precaution).
_AST_LOCK = threading.Lock()


def _starts_statement(line: str) -> bool:
    return bool(line) and not line[0].isspace() and line[0] != "#" and not _CONTINUES.match(line)


def _kept(body: list[ast.stmt], lines: list[str]) -> int:
    """Characters of ``lines`` up to the end of the last statement of
    ``body`` that may end a part (trailing expressions dropped); 0: none."""
    waiting = 0  # first line of the trailing expressions, which wait
    while body and isinstance(body[-1], ast.Expr):
        waiting = body.pop().lineno
    if not body or body[-1].end_lineno is None:
        return 0
    if waiting and waiting <= body[-1].end_lineno:  # `x = f(); x` on one line: wait
        return 0
    return sum(len(line) for line in lines[: body[-1].end_lineno])


def _parsed(code: str) -> list[ast.stmt] | None:
    try:
        with _AST_LOCK:
            return ast.parse(code).body
    except (SyntaxError, ValueError):  # not complete (yet), or never
        return None


def python_ready(code: str) -> int:
    """Characters at the start of ``code`` (complete lines of a Python block
    being written) that hold whole top-level statements safe to run now; 0: none."""
    lines = code.splitlines(keepends=True)
    if not lines or not code.endswith(("\n", "\r")):
        return 0
    body = _parsed(code)
    if body:  # all of it parses: every statement is done but a compound last one
        end = len(body)
        while end and isinstance(body[end - 1], ast.Expr):
            end -= 1
        if end and not isinstance(body[end - 1], _SIMPLE):
            body = body[: end - 1]  # it may go on: more of its body, an else, an except
        return _kept(body, lines)
    last = lines[-1]  # the last line may begin the next statement
    if not _starts_statement(last.rstrip("\r\n")):
        return 0
    head = code[: len(code) - len(last)]
    if not head.strip():
        return 0
    body = _parsed(head)
    return _kept(body, lines) if body else 0
