"""The bash backend through the real loop (scripted root and sub models)."""

from __future__ import annotations

from polyrlm import RLM, StopReason
from polyrlm.events import CodeExecuted
from polyrlm.testing.scripted import ScriptedModel
from tests.core.test_loop import NEEDLE, haystack, needle_finder

GREP = '```bash\ngrep -o "[0-9]*-ALPHA" "$CONTEXT" | final\n```'

PARTITION = """Split, map, reduce.
```sh
mkdir -p parts && split -n l/10 -d -a 3 "$CONTEXT" parts/p-
to_json -p "Find the launch code in this text, or say NONE." parts/p-* | llm_batch > replies.jsonl
from_json < replies.jsonl | grep -v '^NONE$' | sort -u > found.txt
ls parts | wc -l; cat found.txt
```"""

FINISH = "```shell\nfinal < found.txt\n```"


def test_grep_needle_and_final() -> None:
    root = ScriptedModel([GREP])
    result = RLM(root.model, backend="bash").completion("What is the code?", haystack())
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "7714-ALPHA"
    assert all(NEEDLE not in m["content"] for call in root.calls for m in call)


def test_partition_map_reduce_with_llm_batch() -> None:
    root = ScriptedModel([PARTITION, FINISH])
    sub = ScriptedModel(needle_finder)
    result = RLM(root.model, sub.model, backend="bash").completion("code?", haystack())
    assert result.stop_reason == StopReason.ANSWERED and result.answer == "7714-ALPHA"
    # The first turn's block ran part by part (bash is pipelined): its outputs, joined.
    ran = [e for e in result.trajectory if isinstance(e, CodeExecuted) and e.iteration == 1]
    assert [e.part for e in ran] == [1, 2, 3, 4] and ran[-1].first_line == 4
    assert "".join(e.output for e in ran) == "10\n7714-ALPHA\n"
    assert len(sub.calls) == 10
    guide = root.calls[0][0]["content"]
    assert "`llm_batch`" in guide and "$CONTEXT" in guide


def test_child_rlm_gets_the_file_as_its_context() -> None:
    def script(messages: list[dict[str, str]]) -> str:
        if "child" in messages[1]["content"]:
            return '```bash\ntr a-z A-Z < "$CONTEXT" | final\n```'
        return '```bash\necho shout > note.txt\nrlm "child: shout it" note.txt | final\n```'

    root = ScriptedModel(script)
    result = RLM(root.model, backend="bash", max_depth=2).completion("q", "ctx")
    assert result.answer == "SHOUT" and set(result.usage.by_depth) == {0, 1}


def test_a_timeout_is_reported_to_the_model() -> None:
    root = ScriptedModel(["```bash\nx=5; sleep 100\n```", "```bash\nfinal $((x * 2))\n```"])
    result = RLM(root.model, backend="bash", backend_config={"exec_timeout_s": 0.5}).completion(
        "q", ""
    )
    assert result.answer == "10"
    assert "TimeoutError" in root.calls[1][-1]["content"]
