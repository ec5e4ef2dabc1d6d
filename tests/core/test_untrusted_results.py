"""The core never trusts what an environment hands back: an answer that
holds itself or nests without end still makes a Result and a trajectory,
and a backend that breaks on hostile code is the model's error."""

from __future__ import annotations

import json

import pytest

from polyrlm import RLM, StopReason
from polyrlm.backends.python.inline import InlinePythonEnvironment
from polyrlm.events import CodeExecuted
from polyrlm.pycell import ANSWER_MAX_DEPTH, plain_answer
from polyrlm.records import ExecResult
from polyrlm.registry import get_registry
from polyrlm.testing.scripted import ScriptedModel


@pytest.mark.parametrize(
    "code",
    ["a = []\na.append(a)\nFINAL(a)", "x = 1\nfor _ in range(5_000):\n    x = [x]\nFINAL(x)"],
    ids=["holds-itself", "deep"],
)
def test_a_pathological_answer_is_kept_to_a_bounded_depth(code: str) -> None:
    root = ScriptedModel([f"```python\n{code}\n```"])
    result = RLM(root.model).completion("q", "c")
    assert result.stop_reason == StopReason.ANSWERED
    json.loads(result.model_dump_json())  # the whole record serialises
    depth, node = 0, result.answer
    while isinstance(node, list):
        depth, node = depth + 1, node[0]
    assert depth <= ANSWER_MAX_DEPTH + 1 and isinstance(node, str | int)


def test_plain_answer_of_a_dict_that_holds_itself() -> None:
    d: dict[str, object] = {}
    d["self"] = d
    json.dumps(plain_answer(d))


class _Breaks(InlinePythonEnvironment):
    """A backend that raises out of execute() (a bug hostile code found)."""

    name = "test-breaks"

    def execute(self, code: str) -> ExecResult:
        if "break" in code:
            raise TypeError("'int' object is not subscriptable")
        return super().execute(code)


@pytest.mark.no_replay("its backend exists only inside this test")
def test_a_backend_that_raises_is_the_models_error(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = get_registry()
    monkeypatch.setattr(registry, "get", lambda name: _Breaks)
    root = ScriptedModel(["```python\nbreak_it = 1\n```", "```python\nFINAL('ok')\n```"])
    result = RLM(root.model, backend="test-breaks").completion("q", "c")
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "ok"
    first = next(e for e in result.trajectory if isinstance(e, CodeExecuted))
    assert "the environment failed on this block" in (first.error or "")
