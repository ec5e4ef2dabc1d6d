"""The REPL protocol: what every environment (backend) provides.

An environment holds the context, runs the root model's code, and keeps
state (variables, tables, files) between executions. The core never looks
inside; it calls the small ABC below. Sub-model calls reach the host through
the :class:`SubCalls` object given at construction (plain callables for
in-process environments; a bridge for out-of-process ones).
"""

from __future__ import annotations

import abc
import json
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field

from polyrlm.answers import AnswerType
from polyrlm.config import CAPTURE_LIMIT_CHARS, EXEC_GRACE_S, EXEC_TIMEOUT_S, MIN_EXEC_LIMIT_S
from polyrlm.prompts import (
    json_answer_guide,
    json_tools_guide,
    python_answer_guide,
    python_tools_guide,
)
from polyrlm.pycell import plain_answer
from polyrlm.records import ExecResult, State
from polyrlm.statements import python_ready
from polyrlm.tools import Tool

__all__ = [
    "ContractSnippets",
    "EnvConfig",
    "Environment",
    "PythonGuides",
    "SubCallFailure",
    "SubCalls",
    "plain_answer",
]


class SubCallFailure(str):
    """A failed item of a batch: a string (so aggregation code does not
    crash) that starts with ``[sub-call failed: ...]``; ``.error`` holds the
    reason. ``isinstance(x, SubCallFailure)`` tells it from an answer."""

    error: str

    def __new__(cls, error: str) -> SubCallFailure:
        self = super().__new__(cls, f"[sub-call failed: {error}]")
        self.error = error
        return self


class SubCalls(Protocol):
    """The host functions an environment offers its code. Thread-safe and
    blocking: call them from the thread that runs the code.

    A ``schema`` (a JSON Schema) makes a sub-call typed: its reply is JSON
    data validated against it (see :mod:`polyrlm.typed_calls`). ``tools``
    are the user's functions this environment's code may call; they run on
    the host (:mod:`polyrlm.tools`), their arguments and results JSON."""

    @property
    def tools(self) -> Sequence[Tool]:
        """The user tools offered to this environment's code."""
        ...

    def llm_query(
        self, prompt: str, model: str | None = None, schema: dict[str, Any] | None = None
    ) -> Any:
        """One sub-model call (text, or JSON data with ``schema``); raises
        :class:`~polyrlm.errors.SubCallError`."""
        ...

    def llm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: dict[str, Any] | None = None
    ) -> list[Any]:
        """Concurrent sub-model calls, in input order; failures per item."""
        ...

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        """A child RLM (or a sub-model call at the depth limit)."""
        ...

    def rlm_batch(self, prompts: Sequence[str], contexts: Sequence[Any] | None = None) -> list[str]:
        """Concurrent child RLMs, in input order; failures per item."""
        ...

    def call_tool(self, name: str, arguments: Mapping[str, Any]) -> Any:
        """One user tool call with named arguments; its result as JSON data.
        Raises :class:`~polyrlm.tools.ToolError` (a ``SubCallError``)."""
        ...

    def call_tools(self, name: str, arguments: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Many calls of one tool at once (an SQL query's rows), in input
        order; raises for the first that failed."""
        ...

    # The same as coroutines, for out-of-process environments served by a bridge.

    async def allm_query(
        self, prompt: str, model: str | None = None, schema: dict[str, Any] | None = None
    ) -> Any: ...

    async def allm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: dict[str, Any] | None = None
    ) -> list[Any]: ...

    async def arlm_query(self, prompt: str, context: Any = None) -> str: ...

    async def arlm_batch(
        self, prompts: Sequence[str], contexts: Sequence[Any] | None = None
    ) -> list[str]: ...

    async def acall_tool(self, name: str, arguments: Mapping[str, Any]) -> Any: ...

    async def acall_tools(self, name: str, arguments: Sequence[Mapping[str, Any]]) -> list[Any]: ...


class EnvConfig(BaseModel):
    """Options every environment takes; a backend's ``Config`` extends it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exec_timeout_s: float = Field(EXEC_TIMEOUT_S, gt=0, description="Seconds per execution.")
    exec_grace_s: float = Field(
        EXEC_GRACE_S, gt=0, description="Seconds past the timeout before the core replaces it."
    )
    capture_limit_chars: int = Field(
        CAPTURE_LIMIT_CHARS, ge=1_000, description="Output characters kept per execution."
    )


class ContractSnippets(BaseModel):
    """Code in the backend's language that the contract suite runs.

    Each snippet's expected effect is in its field description.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    print_hello: str = Field(description="Prints exactly: hello")
    set_var: str = Field(description="Stores the number 41 in a variable named x.")
    read_var: str = Field(description="Prints x + 1 (42).")
    context_length: str = Field(description="Prints the length in characters of a text context.")
    set_answer: str = Field(description="Sets the answer to the text 42 and marks it ready.")
    fail: str = Field(description="Fails with an error that mentions: boom")
    llm_query: str = Field(description="Prints the sub-model's reply to the prompt: ping")
    llm_batch: str = Field(description="Prints the replies to [a, b, c] joined by commas.")
    loop_forever: str = Field(description="Never ends on its own.")
    flood: str = Field(description="Prints about ten million characters.")
    # Typed answers and user tools (None: not provided; the contract then fails).
    typed_answer: str | None = Field(
        None,
        description=(
            'Sets the answer, marked ready, to the object {"name": "Ada", "tags": ["x", "y"], '
            '"address": {"city": "Paris"}} (in the language\'s own idiom or as JSON text).'
        ),
    )
    wrong_typed_answer: str | None = Field(
        None,
        description=(
            'Sets the answer, marked ready, to {"name": "Ada", "tags": "x"} (tags not a '
            "list, address missing)."
        ),
    )
    call_tool: str | None = Field(
        None,
        description=(
            "Calls the user tool area with width 6 and height 7, and sets the answer to its "
            "result (42), marked ready."
        ),
    )
    typed_llm_query: str | None = Field(
        None,
        description=(
            "Makes a typed sub-call with the prompt ping and the JSON Schema "
            '{"type": "object"}, and prints the value of its reply\'s key echo.'
        ),
    )


class Environment(abc.ABC):
    """A persistent REPL in one language. Use it as a context manager."""

    #: Registry name, e.g. ``"python"``.
    name: ClassVar[str]
    #: Language of the code it runs, e.g. ``"python"``.
    language: ClassVar[str]
    #: Fence info strings whose blocks it runs, e.g. ``("python", "repl")``.
    fence_tags: ClassVar[tuple[str, ...]]
    #: True when the code cannot reach the host (its files, memory, secrets).
    sandboxed: ClassVar[bool]
    #: Snippets for the contract test suite.
    contract: ClassVar[ContractSnippets]
    #: Whether running a block part by part as the root writes it
    #: (:mod:`polyrlm.pipeline`) gives what running it whole gives in every
    #: case, a later syntax error included; then pipelining is on by default.
    pipelines_exactly: ClassVar[bool] = False
    #: Whether an error in a part of a block keeps its later parts from running
    #: (as an error ends a Python or SQL block; Bash goes on to the next command).
    stops_at_error: ClassVar[bool] = True
    #: What joins the outputs of a pipelined block's parts.
    part_separator: ClassVar[str] = ""
    #: Starts of comment lines, which do not show that a pipelined block goes
    #: on: a block may end with them, and its last statement must then run as
    #: the block's last part (SQL shows its result, Bash reports its status).
    comment_prefixes: ClassVar[tuple[str, ...]] = ("#", "--")

    class Config(EnvConfig):
        """Options of this backend."""

    def __init__(self, subcalls: SubCalls, config: EnvConfig | None = None) -> None:
        self.subcalls = subcalls
        self.config = config if config is not None else self.Config()
        #: The ``time.monotonic()`` by which the run must end (its
        #: ``max_seconds``), set by the core; None: no deadline.
        self.deadline: float | None = None

    @classmethod
    def keeps_spare(cls, config: EnvConfig) -> bool:
        """Whether the core keeps one environment of this kind started ahead
        for the next run (:mod:`polyrlm.spares`): worth it where starting one
        takes long (a process, its imports). No by default."""
        return False

    def exec_limit_s(self) -> float:
        """Seconds the next block may run: ``exec_timeout_s``, or less when
        the run's deadline is nearer. Backends interrupt a block after this."""
        limit = self.config.exec_timeout_s
        if self.deadline is not None:
            limit = min(limit, max(MIN_EXEC_LIMIT_S, self.deadline - time.monotonic()))
        return limit

    @abc.abstractmethod
    def load_context(self, context: Any) -> None:
        """Make ``context`` available to code, per the backend's conventions."""

    @abc.abstractmethod
    def execute(self, code: str) -> ExecResult:
        """Run one block; never raises for the code's own errors."""

    def ready_statements(self, code: str) -> int:
        """Characters at the start of ``code`` (the complete lines, each with
        its newline, of a block the root is still writing) that are whole
        top-level statements which may run now; 0: none yet, and by default
        (nothing is pipelined). Python's are in :class:`PythonGuides`."""
        return 0

    def execute_part(self, code: str) -> ExecResult:
        """Run a leading part of a block (statements :meth:`ready_statements`
        allowed) while the rest is being written: as :meth:`execute`, except
        that what a block shows only at its end is left out (SQL: the last
        statement's result). ``code`` is padded with blank lines to keep the
        block's line numbers. The default is :meth:`execute`."""
        return self.execute(code)

    @abc.abstractmethod
    def read_state(self) -> State:
        """Names, types and sizes of what the code made, and the answer."""

    @abc.abstractmethod
    def prompt_guide(self) -> str:
        """How this language exposes the context, the functions, the answer."""

    def answer_code(self, text: str) -> str | None:
        """Code that sets the answer to ``text`` (``FINAL("...")``), which the
        compact prompt profile shows a model that wrote its answer as prose;
        None (the default): not shown."""
        return None

    def compact_guide(self) -> str:
        """The guide in a few lines, for small models and small windows (the
        "compact" prompt profile): the context, one sub-model function, the
        answer idiom and one search example. The default is the whole guide."""
        return self.prompt_guide()

    def answer_guide(self, answer_type: AnswerType) -> str:
        """How to set an answer of ``answer_type`` in this language (added
        to the guide of a typed run). The default shows the JSON Schema;
        backends whose language has types show those."""
        return json_answer_guide(answer_type)

    def tools_guide(self, tools: Sequence[Tool]) -> str:
        """How this language calls the user's ``tools`` (added to the guide
        when there are any). The default lists them as JSON."""
        return json_tools_guide(tools)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to free by default
        """Free processes, files and sockets. Safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PythonGuides:
    """For backends whose language is Python (mix in before
    :class:`Environment`): typed answers and tools shown as Python types,
    and a block's statements found by :mod:`ast` for pipelined turns."""

    #: A Python part never ends in an expression (polyrlm.statements), so a
    #: block's last statement may run as a part: comments show it goes on too.
    comment_prefixes: ClassVar[tuple[str, ...]] = ()

    def ready_statements(self, code: str) -> int:
        return python_ready(code)

    def answer_code(self, text: str) -> str | None:
        return f"FINAL({json.dumps(text, ensure_ascii=False)})"  # JSON's escapes are Python's

    def answer_guide(self, answer_type: AnswerType) -> str:
        return python_answer_guide(answer_type)

    def tools_guide(self, tools: Sequence[Tool]) -> str:
        return python_tools_guide(tools)
