"""What the guest reports after a turn, checked before the host believes any of it.

The guest helper (:mod:`polyrlm.backends.wasm.guest`) shares its interpreter
with the model's code, so a report is only as trustworthy as the code that ran
before it: the model can rebind ``_polyrlm._emit``, write a line that looks
like a result to the real stdout, or break the helper. So the host treats the
result line as hostile input: at most :func:`report_max_chars` characters,
parsed as JSON (no recursion error escapes), then checked by strict pydantic
models with every size capped (output and error by ``capture_limit_chars``,
the answer by :data:`WASM_ANSWER_MAX_CHARS` and :data:`WASM_ANSWER_MAX_DEPTH`,
the variables by :data:`WASM_MAX_VARIABLES` and :data:`WASM_NAME_MAX_CHARS`).
Anything else is :class:`UnreadableReport`, which the environment turns into
the model's error; it never reaches the loop as an exception.

The limits here are the ones the honest guest keeps (it is given them at
install), so a report it writes always passes.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from polyrlm.backends.wasm.guest import RESULT_MARK, json_depth

__all__ = [
    "WASM_ANSWER_MAX_CHARS",
    "WASM_ANSWER_MAX_DEPTH",
    "WASM_MAX_VARIABLES",
    "WASM_NAME_MAX_CHARS",
    "AnswerReport",
    "BlockReport",
    "LoadReport",
    "Report",
    "UnreadableReport",
    "VariableReport",
    "read_report",
    "report_max_chars",
    "split_report",
    "summarize",
]

#: Characters of the answer's content as ASCII JSON; the guest cuts a longer one.
WASM_ANSWER_MAX_CHARS = 4_000_000
#: Levels of nested lists and dicts in the answer's content (pydantic cannot
#: write a value nested 256 deep into the trajectory); the guest sends a
#: deeper one as its text.
WASM_ANSWER_MAX_DEPTH = 100
#: Variables listed by ``read_state``.
WASM_MAX_VARIABLES = 1_000
#: Characters of a variable's name or type name as listed; the guest cuts longer ones.
WASM_NAME_MAX_CHARS = 256
#: Largest count of dropped output characters believed (an int64).
_MAX_COUNT = 2**63 - 1
#: Characters of ASCII-escaped JSON per character of text at worst (an
#: astral character is a ``\\uXXXX\\uXXXX`` pair).
_ESCAPED_CHARS_PER_CHAR = 12
#: Characters of a result line beyond its strings: keys, numbers, brackets.
_REPORT_SLACK_CHARS = 64 * 1024
#: Validation errors quoted in a refusal.
_SHOWN_ERRORS = 3

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
Name = Annotated[str, Field(max_length=WASM_NAME_MAX_CHARS)]


def report_max_chars(capture_limit_chars: int) -> int:
    """The longest result line an honest guest writes (output and error of
    ``capture_limit_chars`` each, the answer, every variable), escaped."""
    strings = 2 * capture_limit_chars + 2 * WASM_MAX_VARIABLES * WASM_NAME_MAX_CHARS
    return strings * _ESCAPED_CHARS_PER_CHAR + WASM_ANSWER_MAX_CHARS + _REPORT_SLACK_CHARS


def summarize(exc: ValidationError) -> str:
    """A pydantic error in a line: the first few problems, where, and how many more."""
    errors = exc.errors(include_url=False, include_input=False)
    shown = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: {e['msg']}"
        for e in errors[:_SHOWN_ERRORS]
    )
    more = f" (and {len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
    return shown + more


class UnreadableReport(ValueError):
    """The guest's report is missing, malformed, spoofed or too large."""


class VariableReport(BaseModel):
    model_config = _STRICT
    name: Name = Field(description="The variable's name.")
    type: Name = Field(description="Its type's name.")
    size: int | None = Field(ge=0, le=_MAX_COUNT, description="Its length; None: it has none.")


class AnswerReport(BaseModel):
    model_config = _STRICT
    ready: bool = Field(description="answer['ready'].")
    content: Any = Field(description="answer['content'] as plain JSON data.")

    @model_validator(mode="after")
    def _bounded(self) -> AnswerReport:
        if json_depth(self.content) > WASM_ANSWER_MAX_DEPTH:
            raise ValueError(f"the answer is nested deeper than {WASM_ANSWER_MAX_DEPTH} levels")
        size = len(json.dumps(self.content, ensure_ascii=True))  # safe: its depth is bounded
        if size > WASM_ANSWER_MAX_CHARS:
            raise ValueError(
                f"the answer is {size:,} characters as JSON, over {WASM_ANSWER_MAX_CHARS:,}"
            )
        return self


def _capped(text: str | None, what: str, info: ValidationInfo) -> None:
    limit = int((info.context or {})["capture_limit_chars"])
    if text is not None and len(text) > limit:
        raise ValueError(f"the {what} is {len(text):,} characters, over {limit:,}")


class LoadReport(BaseModel):
    """After a context load: the variables."""

    model_config = _STRICT
    state: list[VariableReport] = Field(max_length=WASM_MAX_VARIABLES, description="Variables.")


class BlockReport(LoadReport):
    """After a block of the model's code."""

    output: str = Field(description="The block's captured output (capped by the guest).")
    dropped: int = Field(ge=0, le=_MAX_COUNT, description="Output characters past the cap.")
    error: str | None = Field(description="The block's error text; None when it ran.")
    timed_out: bool = Field(description="The block was interrupted at its time limit.")
    answer: AnswerReport = Field(description="The answer after the block.")

    @model_validator(mode="after")
    def _within_capture(self, info: ValidationInfo) -> BlockReport:
        _capped(self.output, "output", info)
        _capped(self.error, "error text", info)
        return self


Report = TypeVar("Report", LoadReport, BlockReport)


def split_report(out: str) -> tuple[str | None, str]:
    """The last result line in a turn's stdout (without its mark), and the
    rest of the stdout; ``(None, out)`` when there is no mark."""
    mark = "\n" + RESULT_MARK
    at = out.rfind(mark)
    if at < 0:
        return None, out
    start = at + len(mark)
    end = out.find("\n", start)
    if end < 0:
        return out[start:], out[:at]
    return out[start:end], out[:at] + out[end + 1 :]


def read_report(kind: type[Report], line: str | None, capture_limit_chars: int) -> Report:
    """The report in ``line``, checked; :class:`UnreadableReport` says why not."""
    if line is None:
        raise UnreadableReport("the sandbox's helper wrote no result (was `_polyrlm` changed?)")
    longest = report_max_chars(capture_limit_chars)
    if len(line) > longest:
        raise UnreadableReport(f"it is {len(line):,} characters, over {longest:,}")
    try:
        # json, not pydantic's parser: a lone surrogate in the output is the
        # model's right (text read with surrogateescape) and pydantic refuses it.
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise UnreadableReport(f"it is not JSON ({type(exc).__name__}: {exc})") from None
    try:
        return kind.model_validate(data, context={"capture_limit_chars": capture_limit_chars})
    except ValidationError as exc:
        raise UnreadableReport(f"it is malformed: {summarize(exc)}") from None
