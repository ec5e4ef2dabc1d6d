"""Typed answers: the declared type, its prompt text, validation on the host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, field_validator

from polyrlm import RLM, Budget, StopReason
from polyrlm.answers import ANSWER_ERRORS_SHOWN, AnswerInvalid, AnswerType, decode_json_text
from polyrlm.errors import ConfigError
from polyrlm.events import AnswerSet, RunFinished
from polyrlm.replay import replay
from polyrlm.testing.scripted import ScriptedModel


class Pet(BaseModel):
    name: str
    legs: int = 4


class Owner(BaseModel):
    """Someone with pets."""

    name: str
    pets: list[Pet]
    nickname: str | None = None


def test_a_pydantic_model_validates_to_an_instance() -> None:
    t = AnswerType(Owner)
    got = t.validate({"name": "Ada", "pets": [{"name": "Rex"}]})
    assert got == Owner(name="Ada", pets=[Pet(name="Rex")])
    assert t.dump(got) == {"name": "Ada", "pets": [{"name": "Rex", "legs": 4}], "nickname": None}


def test_json_text_is_decoded_unless_the_type_is_text() -> None:
    assert AnswerType(list[int]).validate("[1, 2]") == [1, 2]
    assert AnswerType(list[int]).validate("```json\n[3]\n```") == [3]
    assert AnswerType(str).validate("[1, 2]") == "[1, 2]"
    assert decode_json_text('The result: {"a": 1} as asked', {"type": "object"}) == {"a": 1}
    assert decode_json_text("not json", {"type": "object"}) == "not json"


def test_errors_name_the_place_and_are_capped() -> None:
    t = AnswerType(Owner)
    with pytest.raises(AnswerInvalid) as caught:
        t.validate({"name": "Ada", "pets": [{"legs": "x"}]})
    assert any(e.startswith("pets.0") for e in caught.value.errors)
    with pytest.raises(AnswerInvalid) as many:
        AnswerType(list[int]).validate(["x"] * 50)
    assert len(many.value.errors) == ANSWER_ERRORS_SHOWN


def test_a_json_schema_is_checked_with_jsonschema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["n"],
    }
    t = AnswerType(schema)
    assert t.validate('{"n": 3, "tags": ["a"]}') == {"n": 3, "tags": ["a"]}
    with pytest.raises(AnswerInvalid) as caught:
        t.validate({"tags": [1]})
    assert sorted(caught.value.errors) == sorted(
        ["(the answer): 'n' is a required property", "tags.0: 1 is not of type 'string'"]
    )


def test_pydantic_validators_run_after_the_schema() -> None:
    class Even(BaseModel):
        n: int

        @field_validator("n")
        @classmethod
        def even(cls, v: int) -> int:
            if v % 2:
                raise ValueError("must be even")
            return v

    with pytest.raises(AnswerInvalid) as caught:
        AnswerType(Even).validate({"n": 3})
    assert "must be even" in caught.value.errors[0]


def test_bad_declarations_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        AnswerType({"type": "no-such-type"})
    with pytest.raises(ConfigError, match="pydantic"):
        AnswerType(object())


def test_the_python_text_declares_every_named_type() -> None:
    text = AnswerType(list[Owner]).python_text()
    assert "class Pet(TypedDict):" in text and "class Owner(TypedDict):" in text
    assert "pets: list[Pet]" in text and "nickname: NotRequired[str | None]" in text
    assert text.endswith("answer type: list[Owner]")
    assert json.loads(AnswerType(Owner).json_text())["title"] == "Owner"


@given(
    st.builds(
        Owner,
        name=st.text(max_size=20),
        pets=st.lists(
            st.builds(Pet, name=st.text(max_size=10), legs=st.integers(0, 8)), max_size=4
        ),
        nickname=st.none() | st.text(max_size=5),
    )
)
def test_a_dumped_instance_validates_back_to_itself(owner: Owner) -> None:
    t = AnswerType(Owner)
    assert t.validate(t.dump(owner)) == owner
    assert t.validate(json.dumps(t.dump(owner))) == owner


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def test_the_loop_feeds_the_errors_back_and_replays_the_same(tmp_path: Path) -> None:
    root = ScriptedModel(
        [
            fenced("FINAL({'name': 'Ada', 'pets': 'Rex'})"),
            fenced("print('thinking')"),  # the refused answer is still set: not checked again
            fenced("FINAL({'name': 'Ada', 'pets': [{'name': 'Rex'}]})"),
        ]
    )
    log = tmp_path / "typed.jsonl"
    result = RLM(root.model, log=log).completion("Who?", "text", answer_type=Owner)
    assert result.stop_reason == StopReason.ANSWERED
    assert result.answer == Owner(name="Ada", pets=[Pet(name="Rex")])
    second_prompt = root.calls[1][-1]["content"]
    assert "does not validate" in second_prompt and "pets" in second_prompt
    assert "still the one that did not validate" in root.calls[2][-1]["content"]
    sets = [e for e in result.trajectory if isinstance(e, AnswerSet)]
    assert [s.valid for s in sets] == [False, True]
    end = result.trajectory[-1]
    assert isinstance(end, RunFinished)
    assert end.answer == {"name": "Ada", "pets": [{"name": "Rex"}]}  # as the code set it
    again = replay(log)  # the recorded JSON Schema stands in for the class
    assert again.replay is not None and again.replay.identical, again.replay
    assert again.answer == end.answer


def test_the_rlm_default_type_and_a_typed_partial_answer() -> None:
    """RLM(answer_type=...) types every completion; a run that stops without
    an answer ready keeps a partial one as an instance when it validates."""
    rlm = RLM(
        ScriptedModel([fenced("answer['content'] = '[1, 2]'")] * 5).model,
        answer_type=list[int],
        budget=Budget(max_iterations=1),
    )
    stopped = rlm.completion("q", "c")
    assert stopped.stop_reason == StopReason.MAX_ITERATIONS and stopped.answer == [1, 2]
    wrong = RLM(
        ScriptedModel([fenced("answer['content'] = [1, 'x']")] * 5).model,
        answer_type=list[int],
        budget=Budget(max_iterations=1),
    ).completion("q", "c")
    assert wrong.answer == [1, "x"]  # as it was: it does not validate


def test_children_answer_in_text() -> None:
    """The answer type is the root's: a child RLM's answer is text for the code."""
    child_root = fenced("FINAL('seven')")
    script = [
        fenced("x = rlm_query('count', 'a b c')\nFINAL({'name': x, 'pets': []})"),
        child_root,
    ]
    root = ScriptedModel(lambda m: script[1] if "count" in m[1]["content"] else script[0])
    result = RLM(root.model, max_depth=2).completion("q", "c", answer_type=Owner)
    assert result.answer == Owner(name="seven", pets=[])
