"""The bash backend's user tools (commands that run on the host), typed
sub-calls (``llm --schema``), typed answers (``final`` with JSON text), and
the rule for tool names that the shell already has."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from polyrlm.answers import AnswerType
from polyrlm.backends.bash.environment import BashEnvironment
from polyrlm.errors import ConfigError
from polyrlm.testing.contract import ContractPerson, EchoSubCalls, area
from polyrlm.tools import as_tools, tool

Make = Callable[..., BashEnvironment]

_BWRAP = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


def person(name: str, tags: list[str]) -> dict[str, Any]:
    """A person record, with an address."""
    return {"name": name, "tags": tags, "address": {"city": "Paris"}}


def host_pid() -> int:
    """The process the tool runs in."""
    return os.getpid()


def explode(why: str) -> str:
    """Always fails."""
    raise ValueError(f"exploded: {why}")


def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()


class _Typed(EchoSubCalls):
    """Records the schema of each typed call."""

    def __init__(self, tools: Any = ()) -> None:
        super().__init__(tools)
        self.schemas: list[Any] = []

    def llm_query(self, prompt: str, model: str | None = None, schema: Any = None) -> Any:
        self.schemas.append(schema)
        return super().llm_query(prompt, model, schema)


@pytest.fixture(params=[pytest.param(True, marks=_BWRAP), False], ids=["sandboxed", "unsandboxed"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    made: list[BashEnvironment] = []

    def factory(*, tools: Any = (), subcalls: Any = None) -> BashEnvironment:
        calls = subcalls or EchoSubCalls(tools)
        env = BashEnvironment(calls, BashEnvironment.Config(sandbox=request.param))
        made.append(env)
        env.load_context("some text")
        return env

    yield factory
    for env in made:
        env.close()


def test_a_tool_is_a_command_with_json_in_and_out(make: Make) -> None:
    env = make(tools=[area, person, host_pid])
    assert env.execute("""area '{"width": 6, "height": 7}'""").output == "42\n"
    assert env.execute("""echo '{"height": 2, "width": 3}' | area""").output == "6\n"
    got = env.execute("""person '{"name": "Zoë", "tags": ["a"]}'""").output
    assert got.count("\n") == 1 and json.loads(got)["name"] == "Zoë"
    # The tool runs on the host, in this process, never in the shell.
    assert env.execute("host_pid").output == f"{os.getpid()}\n"
    subcalls = env.subcalls
    assert isinstance(subcalls, EchoSubCalls)
    assert subcalls.tool_calls[:2] == [
        ("area", {"width": 6, "height": 7}),
        ("area", {"height": 2, "width": 3}),
    ]


def test_a_tool_result_feeds_further_commands(make: Make) -> None:
    env = make(tools=[area, person])
    doubled = env.execute(
        """a=$(area '{"width": 6, "height": 7}')\n"""
        """area "{\\"width\\": $a, \\"height\\": 2}" | sed 's/^/area: /'"""
    )
    assert doubled.error is None and doubled.output == "area: 84\n"
    typed = env.execute("""person '{"name": "Ada", "tags": ["x", "y"]}' | final""")
    assert typed.error is None and typed.answer_ready
    answer = AnswerType(ContractPerson).validate(typed.answer)
    assert answer == ContractPerson.model_validate(person("Ada", ["x", "y"]))


def test_a_text_argument_is_quoted_with_to_json(make: Make) -> None:
    env = make(tools=[shout])
    code = """t='it'"'"'s "quoted"\nand two lines'\nshout "{\\"text\\": $(to_json -t "$t")}" """
    result = env.execute(code)
    assert result.error is None
    assert json.loads(result.output) == 'IT\'S "QUOTED"\nAND TWO LINES'


def test_a_failing_tool_exits_non_zero_and_names_the_argument(make: Make) -> None:
    env = make(tools=[area, explode])
    bad = env.execute("""area '{"width": "wide", "height": 7}' 2>err.txt; echo "status $?" """)
    assert bad.error is None and bad.output == "status 1\n"
    stderr = env.execute("cat err.txt").output
    assert "area" in stderr and "width" in stderr and "integer" in stderr
    failed = env.execute("""area '{"width": "wide", "height": 7}' | final""")
    assert failed.error is not None and "width" in failed.error and not failed.answer_ready
    raised = env.execute("""explode '{"why": "on purpose"}'""")
    assert raised.error is not None and "exploded: on purpose" in raised.error
    words = env.execute("area 6 7")
    assert words.error is not None and "one JSON object" in words.error
    not_json = env.execute("area 'width=6'")
    assert not_json.error is not None and "must be JSON" in not_json.error
    # The environment goes on.
    assert env.execute("""area '{"width": 1, "height": 1}'""").output == "1\n"


def test_help_shows_the_arguments_schema(make: Make) -> None:
    env = make(tools=[area])
    result = env.execute("area --help")
    assert result.error is None
    assert "The area of a width by height rectangle." in result.output
    assert '"width":{"type":"integer"}' in result.output


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("ls", "PATH"),
        ("sort", "PATH"),
        ("echo", "builtin"),
        ("then", "keyword"),
        ("to_json", "bash backend"),
        ("__polyrlm_end", "bash backend"),
    ],
)
@pytest.mark.parametrize("sandbox", [pytest.param(True, marks=_BWRAP), False])
def test_a_tool_named_like_a_shell_command_is_refused(name: str, why: str, sandbox: bool) -> None:
    clashing = tool(area, name=name)
    with pytest.raises(ConfigError, match=rf"'{name}' is a .*{why}.*rename the tool"):
        BashEnvironment(EchoSubCalls([clashing]), BashEnvironment.Config(sandbox=sandbox))


def test_the_clash_rule_follows_the_shell_s_own_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    program = tmp_path / "areaz"
    program.write_text("#!/bin/sh\necho host program\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    named = [tool(area, name="areaz")]
    with pytest.raises(ConfigError, match="areaz"):
        BashEnvironment(EchoSubCalls(named), BashEnvironment.Config(sandbox=False))
    if shutil.which("bwrap"):  # the sandbox's PATH has only the system's folders
        with BashEnvironment(EchoSubCalls(named), BashEnvironment.Config(sandbox=True)) as env:
            env.load_context("")
            assert env.execute("""areaz '{"width": 2, "height": 2}'""").output == "4\n"


def test_typed_llm_prints_json_and_sends_the_schema(make: Make) -> None:
    calls = _Typed()
    env = make(subcalls=calls)
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}}
    result = env.execute(f"echo body | llm --schema '{json.dumps(schema)}' 'head:'")
    assert result.error is None
    assert json.loads(result.output) == {"echo": "re:head:\n\nbody\n"}
    assert result.output.count("\n") == 1
    assert calls.schemas == [schema]
    plain = env.execute("llm --no-input ping")
    assert plain.output == "re:ping\n" and calls.schemas[-1] is None
    bad = env.execute("llm --schema 'not json' ping")
    assert bad.error is not None and "--schema must be JSON" in bad.error
    listed = env.execute("llm --schema '[1]' --no-input ping")
    assert listed.error is not None and "schema" in listed.error


def test_guides_show_final_taking_json_and_each_tool_as_a_command(make: Make) -> None:
    env = make()
    typed = env.answer_guide(AnswerType(ContractPerson))
    assert "`final" in typed and '"city"' in typed and "JSON" in typed
    assert "not JSON-quoted" in env.answer_guide(AnswerType(str))
    tools = env.tools_guide(as_tools([area, person]))
    assert "- `area ARGUMENTS`: The area of a width by height rectangle." in tools
    assert '"required":["width","height"]' in tools and "prints: " in tools
    assert "`person ARGUMENTS`" in tools
    assert "llm --schema" in env.prompt_guide()
