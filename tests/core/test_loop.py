"""The loop end to end on python-inline with scripted models."""

from __future__ import annotations

import random
import string

from polyrlm import RLM, Budget, StopReason
from polyrlm.events import CodeExecuted, ModelCalled, RunStarted
from polyrlm.records import Role
from polyrlm.testing.scripted import ScriptedModel

NEEDLE = "The secret launch code is 7714-ALPHA."


def haystack(size: int = 1_000_000, seed: int = 7) -> str:
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(500)]
    out: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choices(words, k=12)) + ".\n"
        out.append(line)
        total += len(line)
    text = "".join(out)[:size]
    middle = size // 2 + 12_345
    return text[:middle] + NEEDLE + text[middle + len(NEEDLE) :]


PARTITION = """I will split the context and ask sub-models.
```python
size = 100_000
chunks = [context[i:i + size] for i in range(0, len(context), size)]
replies = llm_batch([f"Find the launch code in this text, or say NONE.\\n{c}" for c in chunks])
found = [r for r in replies if r != "NONE"]
print(len(chunks), found)
```"""

FINISH = "```python\nanswer['content'] = found[0]\nanswer['ready'] = True\n```"


def needle_finder(messages: list[dict[str, str]]) -> str:
    text = messages[-1]["content"]
    return "7714-ALPHA" if "7714-ALPHA" in text else "NONE"


def test_partition_map_reduce_finds_needle() -> None:
    context = haystack()
    assert len(context) == 1_000_000
    root = ScriptedModel([PARTITION, FINISH])
    sub = ScriptedModel(needle_finder)
    result = RLM(root.model, sub.model).completion("What is the launch code?", context)
    assert result.stop_reason == StopReason.ANSWERED
    assert result.answer == "7714-ALPHA"
    for messages in root.calls:  # the context (and so the needle) never reaches the root
        for message in messages:
            assert NEEDLE not in message["content"]
    assert result.usage.by_role[Role.ROOT].calls == 2
    assert result.usage.by_role[Role.SUB].calls == 10
    assert (
        result.usage.by_role[Role.SUB].prompt_tokens > result.usage.by_role[Role.ROOT].prompt_tokens
    )
    assert result.usage.total.calls == 12
    outputs = [e.output for e in result.trajectory if isinstance(e, CodeExecuted)]
    assert "10 ['7714-ALPHA']" in outputs[0]


def test_no_code_gets_feedback_and_prose_final_is_ignored() -> None:
    root = ScriptedModel(
        [
            "The answer is FINAL(42). I will then do FINAL(x).",
            "```python\nFINAL('ok')\n```",
        ]
    )
    result = RLM(root.model).completion("q", "ctx")
    assert result.answer == "ok"
    feedback = root.calls[1][-1]["content"]
    assert "No runnable code block" in feedback and "```python" in feedback


def test_wrong_language_block_gets_feedback() -> None:
    root = ScriptedModel(["```sql\nSELECT 1\n```", "```python\nFINAL(1)\n```"])
    result = RLM(root.model).completion("q", "ctx")
    assert result.answer == 1
    assert "tagged sql" in root.calls[1][-1]["content"]


def test_several_blocks_run_in_order_and_unclosed_fence_runs() -> None:
    root = ScriptedModel(
        [
            "```python\na = 1\n```\nthen\n```python\nb = a + 1\nprint(b)",
            "```python\nFINAL(b)\n```",
        ]
    )
    result = RLM(root.model, stop_at_code_end=False).completion("q", "ctx")
    assert result.answer == 2
    observation = root.calls[1][-1]["content"]
    assert "[block 2 of 2]" in observation and "2" in observation


def test_stop_sequence_cuts_invented_output() -> None:
    # The model writes its code, then invents output and an answer: the stop
    # sequence ends the reply after the block, so the invention never counts.
    root = ScriptedModel(
        [
            "```python\nprint(len(context))\n```\nOutput: 999\n```python\nFINAL(999)\n```",
            "```python\nFINAL(len(context))\n```",
        ]
    )
    result = RLM(root.model).completion("q", "abc")
    assert result.answer == 3
    assert "FINAL(999)" not in str(root.calls[1][-2]["content"])


def test_long_output_truncated_with_note_and_errors_fed_back() -> None:
    root = ScriptedModel(
        [
            "```python\nprint('y' * 50_000)\n```",
            "```python\n1 / 0\n```",
            "```python\nFINAL('done')\n```",
        ]
    )
    result = RLM(root.model, budget=Budget(max_output_chars=1_000)).completion("q", "c")
    assert result.answer == "done"
    shown = root.calls[1][-1]["content"]
    assert "49001 characters cut" in shown and len(shown) < 1_300  # 50,001 - 1,000
    assert "ZeroDivisionError" in root.calls[2][-1]["content"]


def test_iterations_run_out_then_fallback_answer() -> None:
    root = ScriptedModel(["```python\nprint(1)\n```"] * 2 + ["```python\nFINAL('late')\n```"])
    result = RLM(root.model, budget=Budget(max_iterations=2)).completion("q", "c")
    assert result.stop_reason == StopReason.MAX_ITERATIONS
    assert result.fallback and result.answer == "late"
    assert "used all your turns" in root.calls[2][-1]["content"]


def test_iterations_run_out_without_answer_keeps_partial() -> None:
    root = ScriptedModel(["```python\nanswer['content'] = 'partial'\n```"] * 3)
    result = RLM(root.model, budget=Budget(max_iterations=2)).completion("q", "c")
    assert result.stop_reason == StopReason.MAX_ITERATIONS
    assert not result.fallback and result.answer == "partial"


def test_depth_two_children_count_in_parent_usage() -> None:
    def script(messages: list[dict[str, str]]) -> str:
        question = messages[1]["content"]
        turns = sum(m["role"] == "assistant" for m in messages)
        if "child task" in question:  # the child RLM at depth 1
            if turns == 0:
                return "```python\nres = rlm_query('grandchild task', context)\nprint(res)\n```"
            return "```python\nFINAL('child:' + res)\n```"
        if turns == 0:
            return "```python\nout = rlm_query('child task', context='abc def')\nprint(out)\n```"
        return "```python\nFINAL(out)\n```"

    root = ScriptedModel(script)
    sub = ScriptedModel(lambda m: "leaf")
    result = RLM(root.model, sub.model, max_depth=2).completion("q", "ctx")
    assert result.answer == "child:leaf"
    by_depth = result.usage.by_depth
    assert set(by_depth) == {0, 1, 2}  # max_depth holds: nothing deeper
    assert by_depth[1].calls == 2 and by_depth[2].calls == 1
    assert result.usage.by_role[Role.ROOT].calls == 4  # 2 root + 2 child turns
    assert result.usage.total.total_tokens == sum(t.total_tokens for t in by_depth.values())
    starts = [e for e in result.trajectory if isinstance(e, RunStarted)]
    assert [s.depth for s in starts] == [0, 1]
    assert starts[1].parent_run_id == starts[0].run_id and starts[1].parent_exec_id
    leaf = [e for e in result.trajectory if isinstance(e, ModelCalled) and e.depth == 2]
    assert leaf[0].prompt.startswith("grandchild task") and leaf[0].run_id == starts[1].run_id


def test_depth_one_rlm_query_is_a_sub_call_and_depth_zero_disables() -> None:
    root = ScriptedModel(["```python\nFINAL(rlm_query('hi', context='x'))\n```"])
    sub = ScriptedModel(lambda m: m[-1]["content"].replace("\n", "|"))
    result = RLM(root.model, sub.model, max_depth=1).completion("q", "c")
    assert result.answer == "hi||x"
    root0 = ScriptedModel(
        ["```python\ntry:\n    llm_query('x')\nexcept SubCallError as e:\n    FINAL(str(e))\n```"]
    )
    result = RLM(root0.model, sub.model, max_depth=0).completion("q", "c")
    assert "disabled" in result.answer
    assert "disabled here" in root0.calls[0][0]["content"]


def test_block_stuck_in_c_code_is_abandoned_and_the_env_replaced() -> None:
    root = ScriptedModel(
        [
            "```python\nx = 1\n```",
            "```python\nimport time\ntime.sleep(60)\n```",
            "```python\nFINAL('x' in dir())\n```",
        ]
    )
    config = {"exec_timeout_s": 0.3, "exec_grace_s": 0.3}
    result = RLM(root.model, backend_config=config).completion("q", "ctx")
    assert result.answer is False  # a fresh namespace: x is gone
    shown = root.calls[2][-1]["content"]
    assert "did not stop" in shown and "restarted" in shown
    executed = [e for e in result.trajectory if isinstance(e, CodeExecuted)]
    assert executed[1].restarted and executed[1].timed_out


def test_timeout_interrupts_python_code_and_keeps_variables() -> None:
    root = ScriptedModel(
        [
            "```python\nx = 41\nwhile True:\n    pass\n```",
            "```python\nFINAL(x + 1)\n```",
        ]
    )
    result = RLM(root.model, backend_config={"exec_timeout_s": 0.3}).completion("q", "c")
    assert result.answer == 42
    assert "TimeoutError" in root.calls[1][-1]["content"]
