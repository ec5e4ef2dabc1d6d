"""Typed sub-calls: llm_query(prompt, schema=...) returns validated JSON data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from polyrlm import RLM, StopReason
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.testing.scripted import ScriptedModel

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
    "required": ["city", "temp"],
}


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def test_a_reply_that_does_not_validate_is_asked_for_once_more() -> None:
    replies = iter(['{"city": "Paris"}', 'Sure: {"city": "Paris", "temp": 21.5}'])
    sub = ScriptedModel(lambda m: next(replies))
    root = ScriptedModel(
        [fenced(f"r = llm_query('weather?', schema={SCHEMA!r})\nFINAL(r['temp'])")]
    )
    result = RLM(root.model, sub.model).completion("q", "c")
    assert result.answer == 21.5
    first, second = sub.calls
    assert "JSON Schema" in first[0]["content"] and '"temp"' in first[0]["content"]
    assert "'temp' is a required property" in second[-1]["content"]
    assert second[1] == {"role": "assistant", "content": '{"city": "Paris"}'}


def test_two_bad_replies_are_the_codes_error() -> None:
    sub = ScriptedModel(lambda m: "no json here")
    root = ScriptedModel(
        [
            fenced(f"llm_query('weather?', schema={SCHEMA!r})"),
            fenced("FINAL('gave up')"),
        ]
    )
    result = RLM(root.model, sub.model).completion("q", "c")
    assert result.answer == "gave up" and len(sub.calls) == 2
    assert "does not validate against the schema" in root.calls[1][-1]["content"]


def test_a_pydantic_model_as_schema_gives_an_instance_and_batches_fail_per_item() -> None:
    sub = ScriptedModel(
        lambda m: '{"city": "Oslo", "temp": -3}' if "Oslo" in m[0]["content"] else "?"
    )
    code = (
        "from pydantic import BaseModel\n"
        "class W(BaseModel):\n    city: str\n    temp: float\n"
        "one = llm_query('Oslo', schema=W)\n"
        "both = llm_batch(['Oslo', 'Nowhere'], schema=W)\n"
        "FINAL([type(one).__name__, one.temp, type(both[0]).__name__, "
        "isinstance(both[1], SubCallFailure)])"
    )
    result = RLM(ScriptedModel([fenced(code)]).model, sub.model).completion("q", "c")
    assert result.stop_reason == StopReason.ANSWERED
    assert result.answer == ["W", -3.0, "W", True]


def test_models_that_take_a_schema_get_it_as_litellms_response_format(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through litellm's real OpenAI code, for a real model name."""
    code = fenced(f"FINAL(llm_query('weather?', schema={SCHEMA!r})['city'])")

    def respond(body: dict[str, Any]) -> str:
        if body["model"] == "root":
            return code
        return json.dumps({"city": "Lima", "temp": 19})

    with FakeOpenAIServer(respond) as server:
        rlm = RLM("openai/root", "openai/gpt-4o-mini", api_base=server.base_url, api_key="x")
        result = rlm.completion("q", "c")
        subs = [c for c in server.calls if c.model == "gpt-4o-mini"]
    assert result.answer == "Lima"
    assert len(subs) == 1
    sent = subs[0].body["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == SCHEMA
    assert "JSON Schema" not in subs[0].messages[-1]["content"]  # the format carries it


def test_a_bad_schema_is_refused_before_anything_is_sent() -> None:
    sub = ScriptedModel(lambda m: "{}")
    root = ScriptedModel(
        [fenced("llm_query('x', schema={'type': 'nothing'})"), fenced("FINAL('ok')")]
    )
    result = RLM(root.model, sub.model).completion("q", "c")
    assert result.answer == "ok" and sub.calls == []
    assert "not a valid JSON Schema" in root.calls[1][-1]["content"]
