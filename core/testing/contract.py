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
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import pytest

from polyrlm.environment import EnvConfig, Environment
from polyrlm.errors import SubCallError
from polyrlm.registry import get_registry

__all__ = ["ECHO_PREFIX", "EchoSubCalls", "EnvironmentContract", "opened_envs", "shows"]

#: What :class:`EchoSubCalls` puts before each prompt it answers.
ECHO_PREFIX = "re:"

EnvFactory = Callable[..., Environment]
E = TypeVar("E", bound=Environment)


@contextlib.contextmanager
def opened_envs(cls: type[E], **defaults: Any) -> Iterator[Callable[..., E]]:
    """A factory ``(context="", **config) -> environment`` of ``cls`` with
    :class:`EchoSubCalls`, its config ``defaults`` updated by ``config``;
    every environment it made is closed when the block ends."""
    made: list[E] = []

    def factory(context: Any = "", **config: Any) -> E:
        options = {**defaults, **config}
        env = cls(EchoSubCalls(), cls.Config(**options) if options else None)
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


class EchoSubCalls:
    """Host functions that answer ``re:<prompt>`` with no model: the
    contract checks the environment's wiring, the broker is tested apart."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def _answer(self, prompt: str) -> str:
        if prompt == "fail":
            raise SubCallError("asked to fail")
        self.prompts.append(prompt)
        return ECHO_PREFIX + prompt

    def llm_query(self, prompt: str, model: str | None = None) -> str:
        return self._answer(prompt)

    def llm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        return [self._answer(p) for p in prompts]

    def rlm_query(self, prompt: str, context: Any = None) -> str:
        return self._answer(prompt)

    def rlm_batch(self, prompts: Sequence[str], contexts: Sequence[Any] | None = None) -> list[str]:
        return [self._answer(p) for p in prompts]

    async def allm_query(self, prompt: str, model: str | None = None) -> str:
        return self._answer(prompt)

    async def allm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        return self.llm_batch(prompts)

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
