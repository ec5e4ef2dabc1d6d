"""The backend contract suite: what every environment must do.

Run it against every registered backend (third-party ones too) with::

    from polyrlm.testing.contract import EnvironmentContract

    class TestContract(EnvironmentContract):
        pass

The ``polyrlm_backend`` fixture is parametrized by the polyrlm pytest plugin
over every available backend (or ``--polyrlm-backends a,b``). Snippets in
each backend's language come from its ``Environment.contract``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from polyrlm.answers import AnswerInvalid, AnswerType
from polyrlm.environment import EnvConfig, Environment
from polyrlm.errors import SubCallError
from polyrlm.events import AnswerSet, RunFinished, ToolCalled
from polyrlm.records import StopReason
from polyrlm.registry import get_registry
from polyrlm.replay import replay
from polyrlm.rlm import RLM
from polyrlm.testing.scripted import ScriptedModel
from polyrlm.tools import ToolError, as_tools

__all__ = [
    "ECHO_PREFIX",
    "ContractAddress",
    "ContractPerson",
    "EchoSubCalls",
    "EnvironmentContract",
    "area",
    "opened_envs",
    "shows",
]

#: What :class:`EchoSubCalls` puts before each prompt it answers.
ECHO_PREFIX = "re:"

EnvFactory = Callable[..., Environment]
E = TypeVar("E", bound=Environment)


@contextlib.contextmanager
def opened_envs(cls: type[E], **defaults: Any) -> Iterator[Callable[..., E]]:
    """A factory ``(context="", tools=(), **config) -> environment`` of
    ``cls`` with :class:`EchoSubCalls` (offering ``tools``), its config
    ``defaults`` updated by ``config``;
    every environment it made is closed when the block ends."""
    made: list[E] = []

    def factory(context: Any = "", *, tools: Sequence[Any] = (), **config: Any) -> E:
        options = {**defaults, **config}
        env = cls(EchoSubCalls(tools), cls.Config(**options) if options else None)
        made.append(env)
        env.load_context(context)
        return env

    try:
        yield factory
    finally:
        for env in made:
            env.close()


def shows(output: str, value: str) -> bool:
    """True when ``value`` stands in ``output`` as a whole token: alone, or as
    a cell of a rendered table (backends render results their own way)."""
    return value in re.split(r"[\s│┃|]+", output)


class ContractAddress(BaseModel):
    """The nested part of the contract's answer type."""

    city: str


class ContractPerson(BaseModel):
    """The contract's answer type: nested fields and a list."""

    name: str
    tags: list[str]
    address: ContractAddress


#: What the ``typed_answer`` snippet sets.
TYPED_ANSWER = ContractPerson(name="Ada", tags=["x", "y"], address=ContractAddress(city="Paris"))


def area(width: int, height: int) -> int:
    """The area of a width by height rectangle."""
    return width * height


def _snippet(env: Environment | type[Environment], field: str) -> str:
    code = getattr(env.contract, field)
    assert code, f"backend {env.name!r} gives no {field!r} contract snippet"
    return str(code)


class EchoSubCalls:
    """Host functions that answer ``re:<prompt>`` with no model: the
    contract checks the environment's wiring, the broker is tested apart.
    A typed call (``schema``) answers ``{"echo": prompt}``; ``tools`` run as
    the core runs them (arguments and results validated), unrecorded."""

    def __init__(self, tools: Sequence[Any] = ()) -> None:
        self.prompts: list[str] = []
        self.tools = as_tools(tools)
        self.tool_calls: list[tuple[str, dict[str, Any]]] = []

    def _answer(self, prompt: str) -> str:
        if prompt == "fail":
            raise SubCallError("asked to fail")
        self.prompts.append(prompt)
        return ECHO_PREFIX + prompt

    def _typed(self, prompt: str, schema: dict[str, Any] | None) -> Any:
        text = self._answer(prompt)
        return text if schema is None else {"echo": text}

    def llm_query(
        self, prompt: str, model: str | None = None, schema: dict[str, Any] | None = None
    ) -> Any:
        return self._typed(prompt, schema)

    def llm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: dict[str, Any] | None = None
    ) -> list[Any]:
        return [self._typed(p, schema) for p in prompts]

    def call_tool(self, name: str, arguments: Mapping[str, Any]) -> Any:
        found = next((t for t in self.tools if t.name == name), None)
        if found is None or found.fn is None:
            raise ToolError(f"there is no tool named {name!r} here")
        if not isinstance(arguments, Mapping):
            raise ToolError(f"{name}: arguments must be an object of named arguments")
        self.tool_calls.append((name, dict(arguments)))
        return found.result(found.fn(**found.arguments(arguments)))

    def call_tools(self, name: str, arguments: Sequence[Mapping[str, Any]]) -> list[Any]:
        return [self.call_tool(name, a) for a in arguments]

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        return self._answer(prompt)

    def rlm_batch(self, prompts: Sequence[str], contexts: Sequence[Any] | None = None) -> list[str]:
        return [self._answer(p) for p in prompts]

    async def allm_query(
        self, prompt: str, model: str | None = None, schema: dict[str, Any] | None = None
    ) -> Any:
        return self._typed(prompt, schema)

    async def allm_batch(
        self, prompts: Sequence[str], model: str | None = None, schema: dict[str, Any] | None = None
    ) -> list[Any]:
        return self.llm_batch(prompts, model, schema)

    async def acall_tool(self, name: str, arguments: Mapping[str, Any]) -> Any:
        return self.call_tool(name, arguments)

    async def acall_tools(self, name: str, arguments: Sequence[Mapping[str, Any]]) -> list[Any]:
        return self.call_tools(name, arguments)

    async def arlm_query(self, prompt: str, context: Any = None) -> str:
        return self._answer(prompt)

    async def arlm_batch(
        self, prompts: Sequence[str], contexts: Sequence[Any] | None = None
    ) -> list[str]:
        return self.llm_batch(prompts)


class EnvironmentContract:
    """Contract tests; subclass it in a test module to run them."""

    @pytest.fixture
    def make_env(self, polyrlm_backend: str) -> Iterator[EnvFactory]:
        with opened_envs(get_registry().get(polyrlm_backend)) as factory:
            yield factory

    def test_class_attributes(self, polyrlm_backend: str) -> None:
        cls = get_registry().get(polyrlm_backend)
        assert cls.name == polyrlm_backend
        assert cls.language and cls.fence_tags and isinstance(cls.sandboxed, bool)
        assert issubclass(cls.Config, EnvConfig)

    def test_print(self, make_env: EnvFactory) -> None:
        env = make_env()
        result = env.execute(env.contract.print_hello)
        assert result.error is None
        assert shows(result.output, "hello")

    def test_state_persists(self, make_env: EnvFactory) -> None:
        env = make_env()
        assert env.execute(env.contract.set_var).error is None
        assert shows(env.execute(env.contract.read_var).output, "42")
        assert "x" in {v.name for v in env.read_state().variables}

    def test_text_context(self, make_env: EnvFactory) -> None:
        text = "first line\nsecond line with a needle\n" * 1000
        env = make_env(text)
        result = env.execute(env.contract.context_length)
        assert result.error is None
        assert shows(result.output, str(len(text)))

    def test_answer(self, make_env: EnvFactory) -> None:
        env = make_env()
        assert not env.read_state().answer_ready
        result = env.execute(env.contract.set_answer)
        assert result.error is None
        assert result.answer_ready and str(result.answer) == "42"
        state = env.read_state()
        assert state.answer_ready and str(state.answer) == "42"

    def test_error_is_reported_and_env_survives(self, make_env: EnvFactory) -> None:
        env = make_env()
        env.execute(env.contract.set_var)
        result = env.execute(env.contract.fail)
        assert result.error is not None and "boom" in result.error
        assert shows(env.execute(env.contract.read_var).output, "42")

    def test_llm_query(self, make_env: EnvFactory) -> None:
        env = make_env()
        result = env.execute(env.contract.llm_query)
        assert result.error is None
        assert shows(result.output, ECHO_PREFIX + "ping")

    def test_llm_batch_in_order(self, make_env: EnvFactory) -> None:
        env = make_env()
        result = env.execute(env.contract.llm_batch)
        assert result.error is None
        assert shows(result.output, ",".join(ECHO_PREFIX + p for p in "abc"))

    def test_timeout_keeps_state(self, make_env: EnvFactory) -> None:
        env = make_env(exec_timeout_s=1.0)
        env.execute(env.contract.set_var)
        result = env.execute(env.contract.loop_forever)
        assert result.timed_out and result.error
        after = env.execute(env.contract.read_var)
        assert after.error is None and shows(after.output, "42")

    def test_flood_is_capped(self, make_env: EnvFactory) -> None:
        env = make_env(capture_limit_chars=10_000)
        result = env.execute(env.contract.flood)
        assert len(result.output) <= 10_000
        assert result.truncated_chars > 0
        assert shows(env.execute(env.contract.print_hello).output, "hello")

    def test_prompt_guide(self, make_env: EnvFactory) -> None:
        env = make_env("some text")
        guide = env.prompt_guide()
        assert f"```{env.fence_tags[0]}" in guide
        for word in ("llm_query", "llm_batch"):
            assert word in guide or word.replace("_query", "") in guide

    def test_close_twice(self, make_env: EnvFactory) -> None:
        env = make_env()
        env.close()
        env.close()

    # -- typed answers and user tools --

    def test_typed_answer(self, make_env: EnvFactory) -> None:
        env = make_env()
        result = env.execute(_snippet(env, "typed_answer"))
        assert result.error is None and result.answer_ready
        assert AnswerType(ContractPerson).validate(result.answer) == TYPED_ANSWER

    def test_wrong_typed_answer_is_refused(self, make_env: EnvFactory) -> None:
        env = make_env()
        result = env.execute(_snippet(env, "wrong_typed_answer"))
        assert result.error is None and result.answer_ready
        with pytest.raises(AnswerInvalid) as caught:
            AnswerType(ContractPerson).validate(result.answer)
        assert any(e.startswith("tags") for e in caught.value.errors)

    def test_tool_call(self, make_env: EnvFactory) -> None:
        env = make_env(tools=[area])
        result = env.execute(_snippet(env, "call_tool"))
        assert result.error is None and result.answer_ready
        assert str(result.answer) == "42"
        subcalls = env.subcalls
        assert isinstance(subcalls, EchoSubCalls)
        assert subcalls.tool_calls == [("area", {"width": 6, "height": 7})]

    def test_typed_llm_query(self, make_env: EnvFactory) -> None:
        env = make_env()
        result = env.execute(_snippet(env, "typed_llm_query"))
        assert result.error is None
        assert shows(result.output, ECHO_PREFIX + "ping")

    def test_guides_show_the_type_and_the_tools(self, make_env: EnvFactory) -> None:
        env = make_env()
        assert "city" in env.answer_guide(AnswerType(ContractPerson))
        guide = env.tools_guide(as_tools([area]))
        assert "area" in guide and "width" in guide and "height" in guide

    def test_run_corrects_a_wrong_typed_answer(self, polyrlm_backend: str) -> None:
        cls = get_registry().get(polyrlm_backend)
        wrong = _snippet(cls, "wrong_typed_answer")
        right = _snippet(cls, "typed_answer")
        tag = cls.fence_tags[0]
        root = ScriptedModel([f"```{tag}\n{wrong}\n```", f"```{tag}\n{right}\n```"])
        result = RLM(root.model, backend=polyrlm_backend).completion(
            "Who?", "some text", answer_type=ContractPerson
        )
        assert result.stop_reason == StopReason.ANSWERED
        assert isinstance(result.answer, ContractPerson) and result.answer == TYPED_ANSWER
        sets = [e for e in result.trajectory if isinstance(e, AnswerSet)]
        assert [s.valid for s in sets] == [False, True]
        assert sets[0].errors and any(e.startswith("tags") for e in sets[0].errors)
        assert AnswerType(ContractPerson).validate(sets[1].answer) == TYPED_ANSWER
        end = result.trajectory[-1]
        assert isinstance(end, RunFinished) and end.answer == sets[1].answer

    def test_run_calls_a_tool_and_replays_it(self, polyrlm_backend: str, tmp_path: Any) -> None:
        cls = get_registry().get(polyrlm_backend)
        code = _snippet(cls, "call_tool")
        root = ScriptedModel([f"```{cls.fence_tags[0]}\n{code}\n```"])
        log = tmp_path / "run.jsonl"
        result = RLM(root.model, backend=polyrlm_backend, tools=[area], log=log).completion(
            "What is the area?", "some text"
        )
        assert result.stop_reason == StopReason.ANSWERED and str(result.answer) == "42"
        calls = [e for e in result.trajectory if isinstance(e, ToolCalled)]
        assert [(c.tool, c.arguments, c.result, c.error) for c in calls] == [
            ("area", {"width": 6, "height": 7}, 42, None)
        ]
        again = replay(log)  # offline: the tool's function is not there, the record serves it
        assert again.replay is not None and again.replay.identical, again.replay
        assert str(again.answer) == "42"
