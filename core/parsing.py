"""Parse the root model's markdown replies and shorten execution output shown back to it.

Code blocks follow CommonMark fences, made robust to model output: a reply cut at a stop
sequence leaves its last fence open, and that block is still returned (``closed=False``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "NON_CODE_TAGS",
    "CodeBlock",
    "code_end",
    "extract_blocks",
    "format_exec_observation",
    "select_blocks",
    "truncate_output",
    "xml_call_code",
]

# Tags of blocks a model uses to quote prose-like output: neither code to run nor a mistake.
NON_CODE_TAGS: frozenset[str] = frozenset(
    {"text", "txt", "output", "console", "plaintext", "markdown", "md", "json", "csv", "log"}
)

_LINE_END = re.compile(r"\r\n|\r|\n")  # CommonMark line endings
_OPEN = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
_CLOSE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")
# XML-style tool calls written as prose (Claude's native syntax, and the <tool_call> JSON
# form of other families): the code argument of each call.
_XML_PARAMETER = re.compile(
    r"<invoke\s+name=[\"']?(\w+)[\"']?\s*>.*?<parameter\s+name=[\"']?(\w+)[\"']?\s*>"
    r"(.*?)</parameter>",
    re.DOTALL,
)
_XML_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
_NOTE = "\n[... {cut} characters cut: keep large results in variables and print slices ...]\n"
_ERROR_NOTE = "[... {cut} earlier characters of the error cut ...]\n"


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block of a reply."""

    tag: str  # first word of the info string, lowercased; "" when there is none
    code: str  # content lines joined with "\n", fence lines excluded
    closed: bool  # False when the text ended inside the block (stopped at a stop sequence)


def _split_lines(text: str) -> list[str]:
    lines = _LINE_END.split(text)
    if lines[-1] == "":
        lines.pop()  # a final line ending does not start another (empty) line
    return lines


def _dedent(line: str, indent: int) -> str:
    # CommonMark: content loses up to as many spaces as the opening fence was indented by.
    spaces = len(line) - len(line.lstrip(" "))
    return line[min(spaces, indent) :]


def _closes(line: str, fence: str) -> bool:
    match = _CLOSE.fullmatch(line)
    return match is not None and match[1][0] == fence[0] and len(match[1]) >= len(fence)


def extract_blocks(text: str) -> list[CodeBlock]:
    """Fenced code blocks of ``text`` in order; text outside fences is ignored. Never raises."""
    blocks: list[CodeBlock] = []
    lines = _split_lines(text)
    i = 0
    while i < len(lines):
        opening = _OPEN.fullmatch(lines[i])
        i += 1
        if opening is None:
            continue
        indent, fence, info = len(opening[1]), opening[2], opening[3]
        if fence[0] == "`" and "`" in info:
            continue  # CommonMark: then it is inline code, not a fence
        words = info.split()
        tag = words[0].lower() if words else ""
        content: list[str] = []
        closed = False
        while i < len(lines):
            line = lines[i]
            i += 1
            if _closes(line, fence):
                closed = True
                break
            content.append(_dedent(line, indent))
        blocks.append(CodeBlock(tag=tag, code="\n".join(content), closed=closed))
    return blocks


def code_end(text: str) -> int | None:
    """Where a streamed reply is cut: just after the closing fence of its first
    complete code block (one not tagged as quoted output, see
    :data:`NON_CODE_TAGS`), once that fence's line has ended; None while there
    is none. What a model writes after its block (invented output, an answer
    on top of it) is never read, whatever the model's stop-sequence support."""
    fence: str | None = None
    quoted = False
    position = 0
    for match in _LINE_END.finditer(text):
        line = text[position : match.start()]
        position = match.end()
        if fence is None:
            opening = _OPEN.fullmatch(line)
            if opening is None or (opening[2][0] == "`" and "`" in opening[3]):
                continue
            fence = opening[2]
            words = opening[3].split()
            quoted = bool(words) and words[0].lower() in NON_CODE_TAGS
        elif _closes(line, fence):
            if not quoted:
                return match.start()
            fence = None
    return None


def select_blocks(
    blocks: Sequence[CodeBlock], fence_tags: Sequence[str]
) -> tuple[list[CodeBlock], list[CodeBlock]]:
    """Split blocks into ``(runnable, wrong_language)`` for an environment's ``fence_tags``.

    Untagged blocks are runnable only when no non-blank block carries one of ``fence_tags``:
    models often omit the tag, but an explicit tag shows which blocks they meant to run.
    """
    wanted = {t.lower() for t in fence_tags}
    present = [b for b in blocks if b.code.strip()]  # blank blocks have nothing to run
    runnable = [b for b in present if b.tag.lower() in wanted]
    if not runnable:
        runnable = [b for b in present if b.tag == ""]
    wrong = [
        b
        for b in present
        if b.tag and b.tag.lower() not in wanted and b.tag.lower() not in NON_CODE_TAGS
    ]
    return runnable, wrong


def truncate_output(text: str, limit: int) -> tuple[str, int]:
    """Keep ``limit`` characters of ``text`` (its head and tail) around a note; ``(shown, cut)``.

    The head gets two thirds: it shows what the output is; the tail shows how it ended.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if len(text) <= limit:
        return text, 0
    head = limit * 2 // 3
    tail = limit - head  # >= 1 because head < limit
    cut = len(text) - limit
    return text[:head] + _NOTE.format(cut=cut) + text[len(text) - tail :], cut


def format_exec_observation(output: str, error: str | None, limit: int) -> tuple[str, int]:
    """The observation of one execution, ``output`` then ``error``, at most ``limit`` of their
    characters kept (plus notes and the ``Error:`` line); returns ``(observation, cut)``.

    When both do not fit, the error keeps its last characters (a traceback ends with the
    exception) within a budget of ``limit // 3`` (at least 1), raised to whatever the output
    leaves unused; the output gets the rest and is shortened by :func:`truncate_output`.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    err = error or ""
    if not err:
        # "(no output)" is a marker, not output: never shortened, even for a tiny limit.
        return truncate_output(output, limit) if output else ("(no output)", 0)
    if not output:
        return truncate_output(err, limit)
    separator = "Error:\n" if output.endswith("\n") else "\nError:\n"
    if len(output) + len(separator) + len(err) <= limit:
        return output + separator + err, 0
    err_keep = min(len(err), max(limit // 3, limit - len(output), 1))
    out_limit = limit - err_keep  # 0 only when limit == 1
    if out_limit >= 1:
        shown_out, out_cut = truncate_output(output, out_limit)
    else:
        shown_out, out_cut = _NOTE.format(cut=len(output)).lstrip("\n"), len(output)
    if shown_out.endswith("\n"):
        separator = "Error:\n"
    err_cut = len(err) - err_keep
    shown_err = err[err_cut:]
    if err_cut:
        shown_err = _ERROR_NOTE.format(cut=err_cut) + shown_err
    return shown_out + separator + shown_err, out_cut + err_cut


def xml_call_code(text: str) -> list[str]:
    """The code of XML-style tool calls a model wrote as prose instead of a
    fenced block (``<invoke name="run_code"><parameter name="code">...``, or
    ``<tool_call>{"name": ..., "arguments": {"code": ...}}</tool_call>``), in
    order; the argument named ``code`` (else the call's only argument)."""
    found: list[tuple[int, str]] = []
    for match in _XML_PARAMETER.finditer(text):
        if match[2] in ("code", "command", "query", "sql", "script"):
            found.append((match.start(), match[3].strip("\n")))
    for match in _XML_TOOL_CALL.finditer(text):
        try:
            call = json.loads(match[1])
        except ValueError:
            continue
        args = call.get("arguments") or call.get("parameters") if isinstance(call, dict) else None
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                args = {"code": args}
        if isinstance(args, dict):
            code = args.get("code", next(iter(args.values()), None) if len(args) == 1 else None)
            if isinstance(code, str) and code.strip():
                found.append((match.start(), code))
    return [code for _, code in sorted(found)]
