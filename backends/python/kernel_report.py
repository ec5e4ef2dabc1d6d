"""What the kernel reports after a block, checked before the host believes any of it.

The report helpers (``__polyrlm_report``, ``__polyrlm_state``, installed by
:mod:`polyrlm.backends.python.kernel_prelude`) share the kernel with the
model's code: the model can rebind them, return anything from them, or
delete them. So the host reads their result as hostile input: the text of a
user expression at most :data:`KERNEL_REPORT_MAX_CHARS` characters, parsed
as JSON (no recursion error escapes), then checked by strict pydantic models
with every size capped. Anything else is :class:`UnreadableReport`, which the
environment turns into the model's error; it never leaves ``execute()``.

The honest helpers keep these limits themselves (an answer too large is
sent as its size, ``oversize``), so what they write always passes.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from polyrlm.records import VarInfo

__all__ = [
    "KERNEL_ANSWER_MAX_CHARS",
    "KERNEL_ANSWER_MAX_DEPTH",
    "KERNEL_MAX_VARIABLES",
    "KERNEL_NAME_MAX_CHARS",
    "KERNEL_REPORT_MAX_CHARS",
    "BlockReport",
    "UnreadableReport",
    "VariableReport",
    "answer_of",
    "read_block_report",
    "read_variables",
]

#: Characters of the answer's content as ASCII JSON; the kernel sends a
#: longer one as its size only, and the model is told.
KERNEL_ANSWER_MAX_CHARS = 4_000_000
#: Levels of nested lists and dicts in the answer's content (a deeper value
#: cannot be written into the trajectory).
KERNEL_ANSWER_MAX_DEPTH = 100
#: Variables listed by ``read_state``; names and type names cut at
#: :data:`KERNEL_NAME_MAX_CHARS`.
KERNEL_MAX_VARIABLES = 1_000
KERNEL_NAME_MAX_CHARS = 256
#: Characters of a report's text read at most: the answer and room for the rest.
KERNEL_REPORT_MAX_CHARS = KERNEL_ANSWER_MAX_CHARS + 64 * 1024
#: Largest count of dropped output characters believed (an int64).
_MAX_COUNT = 2**63 - 1
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)
Name = Annotated[str, Field(max_length=KERNEL_NAME_MAX_CHARS)]


class UnreadableReport(ValueError):
    """The kernel's report is missing, malformed, spoofed or too large."""


def _depth(value: Any) -> int:
    """Levels of nested lists and dicts (iterative: no recursion error)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, list | dict):
            deepest = max(deepest, level)
            todo += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


class BlockReport(BaseModel):
    """After a block: the answer and the output the kernel dropped."""

    model_config = _STRICT
    ready: bool = Field(description="answer['ready'].")
    answer: Any = Field(description="answer['content'] as plain JSON data.")
    dropped: int = Field(ge=0, le=_MAX_COUNT, description="Output characters past the cap.")
    oversize: int | None = Field(
        None, ge=0, description="The answer's size as JSON when it was too large to send."
    )

    @model_validator(mode="after")
    def _bounded(self) -> BlockReport:
        if _depth(self.answer) > KERNEL_ANSWER_MAX_DEPTH:
            raise ValueError(f"the answer is nested deeper than {KERNEL_ANSWER_MAX_DEPTH} levels")
        return self


class VariableReport(BaseModel):
    """One row of ``__polyrlm_state()``: a variable of the model's."""

    model_config = _STRICT
    name: Name = Field(description="As bound in the kernel's namespace (cut).")
    type: Name = Field(description="``type(value).__name__`` (cut).")
    size: int | None = Field(ge=0, le=_MAX_COUNT, description="``len(value)``, if it has one.")

    def as_var_info(self) -> VarInfo:
        return VarInfo(name=self.name, type=self.type, size=self.size)


class _Variables(BaseModel):
    model_config = _STRICT
    variables: list[VariableReport] = Field(max_length=KERNEL_MAX_VARIABLES)


def _summarize(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "top level"
    return f"{where}: {first['msg']}" + (
        f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    )


def _json(value: Any, what: str) -> Any:
    """The JSON in a user expression's result (``{"status", "data"}``)."""
    if not isinstance(value, dict):
        raise UnreadableReport(f"the {what} did not come back (was it changed or deleted?)")
    if value.get("status") != "ok":
        name = value.get("ename")
        raise UnreadableReport(
            f"the {what} failed" + (f" ({name})" if isinstance(name, str) else "")
        )
    data = value.get("data")
    text = data.get("text/plain") if isinstance(data, dict) else None
    if not isinstance(text, str):
        raise UnreadableReport(f"the {what} is not text")
    if len(text) > KERNEL_REPORT_MAX_CHARS:
        raise UnreadableReport(
            f"the {what} is {len(text):,} characters, over {KERNEL_REPORT_MAX_CHARS:,}"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UnreadableReport(f"the {what} is not JSON ({type(exc).__name__})") from None


def read_block_report(value: Any) -> BlockReport:
    """The checked report of ``__polyrlm_report()``; :class:`UnreadableReport` says why not."""
    data = _json(value, "block's report")
    try:
        return BlockReport.model_validate(data)
    except ValidationError as exc:
        raise UnreadableReport(f"the block's report is malformed: {_summarize(exc)}") from None


def read_variables(value: Any) -> list[VariableReport]:
    """The checked listing of ``__polyrlm_state()``."""
    data = _json(value, "variable listing")
    try:
        return _Variables.model_validate({"variables": data}).variables
    except ValidationError as exc:
        raise UnreadableReport(f"the variable listing is malformed: {_summarize(exc)}") from None


def answer_of(report: BlockReport) -> tuple[bool, Any, str | None]:
    """``(ready, answer, problem)``: an answer too large to send is no answer,
    and the model is told."""
    if report.oversize is not None:
        return (
            False,
            None,
            (
                f"AnswerError: the answer is {report.oversize:,} characters as JSON, over "
                f"{KERNEL_ANSWER_MAX_CHARS:,}; no answer was set"
            ),
        )
    return report.ready, report.answer if report.ready else None, None
