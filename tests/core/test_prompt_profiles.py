"""The prompt profiles: "auto" picks compact for a small window, the compact
prompt is short and carries no preview to echo, and the compact notes show
a small model how to answer (only after it ran code)."""

from __future__ import annotations

import re

import pytest

from polyrlm import RLM
from polyrlm.errors import ConfigError
from polyrlm.prompts import (
    COMPACT_OUTPUT_NOTE,
    COMPACT_WINDOW_TOKENS,
    NO_CODE_FIRST_COMPACT_PROMPT,
    NO_CODE_QUESTION_COMPACT_PROMPT,
    chosen_profile,
)
from polyrlm.testing.scripted import ScriptedModel, word_tokens

CONTEXT = "filler line\n" * 2_000 + "The access code is Russet-Walrus.\n" + "more filler\n" * 2_000
SEARCH = "```python\nimport re\nprint([m.start() for m in re.finditer('code', context)])\n```"
FINISH = "```python\nFINAL('Russet-Walrus')\n```"


@pytest.mark.parametrize(
    ("profile", "window", "chosen"),
    [
        ("auto", 8_192, "compact"),
        ("auto", COMPACT_WINDOW_TOKENS, "compact"),
        ("auto", COMPACT_WINDOW_TOKENS + 1, "full"),
        ("auto", None, "full"),  # a window nobody knows: the frontier default
        ("full", 8_192, "full"),
        ("compact", 1_000_000, "compact"),
    ],
)
def test_auto_chooses_by_the_roots_window(profile: str, window: int | None, chosen: str) -> None:
    assert chosen_profile(profile, window) == chosen


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ConfigError, match="prompt_profile must be one of auto, full, compact"):
        RLM("openai/x", prompt_profile="tiny")


def _opening(profile: str, window: int, backend: str = "python-inline") -> list[str]:
    root = ScriptedModel(["```python\nFINAL('x')\n```"])
    rlm = RLM(root.model, backend=backend, windows={root.model: window}, prompt_profile=profile)
    assert rlm.completion("What is the access code?", CONTEXT).answer == "x"
    return [m["content"] for m in root.calls[0]]


def test_the_compact_opening_is_a_third_of_the_full_one_and_has_no_preview() -> None:
    compact, full = _opening("auto", 8_192), _opening("auto", 200_000)
    assert word_tokens(" ".join(compact)) * 2 < word_tokens(" ".join(full))
    assert "filler line" in full[0] and "filler line" not in compact[0]  # the preview
    assert compact[1] == "Question: What is the access code?\nFirst search the input with code."
    assert f'"chars": {len(CONTEXT)}' in compact[0]  # the metadata stays


def _notes(replies: list[str], backend: str = "python-inline") -> list[str]:
    """What the root was told after each of its replies, in a compact run."""
    root = ScriptedModel(replies)
    rlm = RLM(root.model, backend=backend, prompt_profile="compact")
    rlm.completion("What is the access code?", CONTEXT)
    return [call[-1]["content"] for call in root.calls[1:]]


def test_prose_before_any_code_is_sent_back_to_search() -> None:
    notes = _notes(["Russet-Walrus", SEARCH, "```python\nFINAL('Russet-Walrus')\n```"])
    assert notes[0] == NO_CODE_FIRST_COMPACT_PROMPT.format(tag="python")
    assert "FINAL(" not in notes[0]  # a guess is not offered as an answer


def test_prose_after_code_is_shown_as_the_block_that_answers_it() -> None:
    notes = _notes([SEARCH, "The code is Russet-Walrus.", "```python\nFINAL('Russet-Walrus')\n```"])
    assert '```python\nFINAL("The code is Russet-Walrus.")\n```' in notes[1]
    assert "Nothing ran" in notes[1]


def test_prose_that_only_repeats_the_question_is_not_offered_as_the_answer() -> None:
    notes = _notes([SEARCH, '"Access Code."', FINISH])
    assert notes[1] == NO_CODE_QUESTION_COMPACT_PROMPT.format(
        tag="python", said='"\\"Access Code.\\""'
    )
    assert "FINAL(" not in notes[1]


def test_each_output_ends_with_the_nudge_in_the_compact_profile_only() -> None:
    assert _notes([SEARCH, FINISH])[0].endswith("\n" + COMPACT_OUTPUT_NOTE)
    root = ScriptedModel([SEARCH, FINISH])
    RLM(root.model, prompt_profile="full").completion("What is the access code?", CONTEXT)
    assert COMPACT_OUTPUT_NOTE not in root.calls[1][-1]["content"]


def test_a_repeated_block_is_not_run_again_and_the_model_is_nudged() -> None:
    notes = _notes([SEARCH, SEARCH, "```python\nFINAL('Russet-Walrus')\n```"])
    [found] = re.findall(r"\[[\d, ]+\]", notes[0])  # the first search's output
    assert notes[1].count("Not run: you ran this same block in turn 1") == 1
    assert "set the answer now" in notes[1]
    assert found in notes[1]  # shown again, next to the nudge
    assert COMPACT_OUTPUT_NOTE not in notes[1]


FIRST_CODE = {
    "python-inline": "```python\nprint(len(context))\n```",
    "sql": "```sql\nSELECT count(*) FROM context;\n```",
    "bash": '```bash\nwc -c < "$CONTEXT"\n```',
}


@pytest.mark.parametrize("backend", sorted(FIRST_CODE))
def test_the_shown_answer_block_sets_exactly_the_prose(backend: str) -> None:
    prose = 'it\'s "7" $HOME `x` \\n'  # quotes, shell and escape characters

    def replies(messages: list[dict[str, str]]) -> str:
        turn = sum(m["role"] == "assistant" for m in messages)
        if turn == 0:
            return FIRST_CODE[backend]
        if turn == 1:
            return prose
        shown = re.findall(r"```\w+\n.*?\n```", messages[-1]["content"], re.DOTALL)
        return str(shown[-1])  # the block the note shows, run as it is

    root = ScriptedModel(replies)
    rlm = RLM(root.model, backend=backend, prompt_profile="compact")
    result = rlm.completion("What is the access code?", CONTEXT)
    assert result.answer == prose
    assert len(root.calls) == 3
