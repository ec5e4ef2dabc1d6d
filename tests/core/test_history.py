"""polyrlm.history: the root history compacted, oldest turns first, to fit the window."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from polyrlm.history import (
    COMPACTION_NOTE,
    NEWEST_MIN_CHARS,
    SUMMARY_HEAD_CHARS,
    code_of,
    compact,
    compaction_note,
    with_note,
)
from polyrlm.provider import message_text

Message = dict[str, Any]
MARK = {"type": "ephemeral"}
SYSTEM: Message = {"role": "system", "content": "You are the root model. " * 10}
QUESTION: Message = {"role": "user", "content": "How many lines mention a refund?"}


def size(messages: list[Message]) -> int:
    """Characters of every text and every tool-call argument."""
    total = 0
    for m in messages:
        total += len(message_text(m))
        total += sum(len(c["function"]["arguments"]) for c in m.get("tool_calls") or ())
    return total


def under(budget: int) -> Callable[[list[Message]], bool]:
    return lambda messages: size(messages) <= budget


def counting(fits: Callable[[list[Message]], bool]) -> tuple[Callable[..., bool], list[int]]:
    calls: list[int] = []

    def counted(messages: list[Message]) -> bool:
        calls.append(1)
        return fits(messages)

    return counted, calls


def parts(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": MARK}]


def fenced(prose: str, code: str, output: str) -> list[Message]:
    reply = f"{prose}\n```python\n{code}\n```"
    return [{"role": "assistant", "content": reply}, {"role": "user", "content": output}]


def tool_turn(turn: int, codes: list[str], outputs: list[str], prose: str = "") -> list[Message]:
    calls = [
        {
            "id": f"call_{turn}_{i}",
            "type": "function",
            "function": {"name": "run_code", "arguments": json.dumps({"code": code})},
        }
        for i, code in enumerate(codes)
    ]
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": out}
        for call, out in zip(calls, outputs, strict=True)
    ]
    return [{"role": "assistant", "content": prose, "tool_calls": calls}, *results]


def history(*turns: list[Message]) -> list[Message]:
    return [SYSTEM, QUESTION, *(m for turn in turns for m in turn)]


def long_output(turn: int, n: int = 2000) -> str:
    return f"first line of turn {turn}\n" + "x" * n


def assert_paired(messages: list[Message]) -> None:
    """Every tool message follows its assistant's matching call; no call lacks its result."""
    open_calls: set[str] = set()
    for m in messages:
        if m["role"] == "tool":
            assert m["tool_call_id"] in open_calls, m
            open_calls.discard(m["tool_call_id"])
            continue
        assert not open_calls, f"calls without results: {open_calls}"
        if m["role"] == "assistant":
            open_calls = {c["id"] for c in m.get("tool_calls") or ()}
    assert not open_calls


# --- hand-written cases -------------------------------------------------------


def test_messages_that_fit_are_returned_as_they_are() -> None:
    messages = history(fenced("Let me look.", "print(1)", "1"))
    fits, calls = counting(under(10**6))
    result = compact(messages, fits)
    assert result.messages == messages and result.messages is not messages
    assert result.note == "" and result.fits_after and not result.changed
    assert result.noted() == messages and len(calls) == 1


def test_older_fenced_turns_keep_their_code_and_a_summary_line() -> None:
    turns = [fenced(f"Prose {i} " * 40, f"x{i} = {i}", long_output(i)) for i in range(1, 5)]
    messages = history(*turns)
    before = copy.deepcopy(messages)
    result = compact(messages, under(size(messages) - 3000))
    assert messages == before
    assert result.fits_after and result.changed and result.dropped_turns == 0
    assert result.messages[:2] == [SYSTEM, QUESTION]
    assistant, observation = result.messages[2], result.messages[3]
    assert assistant["content"] == "```python\nx1 = 1\n```"
    assert observation["content"].startswith("[output of turn 1 (2,021 characters) cut")
    assert "the environment's variables are untouched" in observation["content"]
    assert observation["content"].endswith("first line of turn 1")
    assert "\n" not in observation["content"]
    assert result.messages[-2:] == turns[-1] and result.messages[-1] is turns[-1][1]
    assert COMPACTION_NOTE in result.note
    assert f"Turns compacted: {result.compacted_turns};" in result.note
    assert result.noted()[-1]["content"] == f"{long_output(4)}\n\n{result.note}"
    assert size(result.noted()) <= size(messages) - 3000


def test_oldest_turns_are_compacted_first_and_only_as_many_as_needed() -> None:
    turns = [fenced("Prose.", f"x{i} = {i}", long_output(i)) for i in range(1, 6)]
    messages = history(*turns)
    result = compact(messages, under(size(messages) - 3000))
    assert result.compacted_turns == 2
    assert result.messages[3]["content"].startswith("[output of turn 1 ")
    assert result.messages[5]["content"].startswith("[output of turn 2 ")
    assert result.messages[6:] == [m for turn in turns[2:] for m in turn]


def test_tool_call_turns_keep_their_calls_and_summarise_their_results() -> None:
    old = tool_turn(1, ["print(len(context))", "print(2)"], [long_output(1), "2"], "Checking.")
    newest = tool_turn(2, ["print(3)"], [long_output(2)])
    messages = history(old, newest)
    result = compact(messages, under(size(messages) - 1000))
    assert result.fits_after and result.compacted_turns == 1
    assistant, first, second = result.messages[2:5]
    assert assistant["tool_calls"] == old[0]["tool_calls"] and assistant["content"] == ""
    assert first["tool_call_id"] == "call_1_0" and first["content"].startswith("[output of turn 1")
    assert second == old[2]  # "2" is shorter than any summary of it
    assert result.messages[5:] == newest
    assert_paired(result.messages)
    assert result.noted()[-1]["content"].endswith(result.note)


def test_list_of_parts_content_is_flattened_when_compacted_and_kept_when_not() -> None:
    old = [
        {"role": "assistant", "content": parts("Look first.\n```python\nprint(context[:9])\n```")},
        {"role": "user", "content": parts(long_output(1))},
    ]
    newest = [
        {"role": "assistant", "content": parts("```python\nprint(2)\n```")},
        {"role": "user", "content": parts(long_output(2, 500))},
    ]
    messages = history(old, newest)
    result = compact(messages, under(size(messages) - 1000))
    assert result.messages[2]["content"] == "```python\nprint(context[:9])\n```"
    assert result.messages[3]["content"].startswith("[output of turn 1 ")
    assert result.messages[4:] == newest
    last = result.noted()[-1]["content"]
    assert last[0] == newest[1]["content"][0] and last[1]["text"] == "\n\n" + result.note


def test_older_turns_are_dropped_whole_when_shortening_is_not_enough() -> None:
    turns = [tool_turn(i, [f"step_{i}() " * 30], [long_output(i)]) for i in range(1, 6)]
    messages = history(*turns)
    budget = size(history(turns[-1])) + 1000
    result = compact(messages, under(budget))
    assert result.fits_after and 0 < result.dropped_turns < 4 and not result.newest_cut
    assert f"oldest removed: {result.dropped_turns}." in result.note
    assert result.messages[2]["tool_calls"][0]["id"] == f"call_{result.dropped_turns + 1}_0"
    assert result.messages[-2:] == turns[-1]
    assert_paired(result.messages)


def test_the_newest_turn_is_cut_head_and_tail_as_the_last_resort() -> None:
    output = "HEAD " + "y" * 20_000 + " TAIL"
    old = fenced("Prose.", "x = 1", long_output(1))
    newest = fenced("I will print it all.", "print(context)", output)
    messages = history(old, newest)
    budget = size([SYSTEM, QUESTION]) + 3000
    result = compact(messages, under(budget))
    assert result.fits_after and result.newest_cut and result.dropped_turns == 1
    assert result.compacted_turns == 2
    assistant, observation = result.messages[2:]
    assert assistant["content"] == "```python\nprint(context)\n```"
    text = observation["content"]
    assert text.startswith("HEAD ") and text.endswith(" TAIL")
    assert "characters of turn 2 cut to fit the window" in text
    assert budget - 100 < size(result.noted()) <= budget  # the longest cut that fits


def test_nothing_fits_gives_the_minimal_form_and_says_so() -> None:
    newest = fenced("Prose.", "print(context)", "z" * 5000)
    messages = history(fenced("Prose.", "x = 1", long_output(1)), newest)
    result = compact(messages, under(10))
    assert not result.fits_after and result.newest_cut
    assert result.messages[:2] == [SYSTEM, QUESTION] and len(result.messages) == 4
    assert all(len(message_text(m)) <= NEWEST_MIN_CHARS for m in result.messages[2:])


def test_a_history_without_turns_that_does_not_fit_is_returned_unchanged() -> None:
    result = compact([SYSTEM, QUESTION], under(10))
    assert result.messages == [SYSTEM, QUESTION] and not result.fits_after
    assert not result.changed


def test_a_reply_without_code_keeps_a_marker_of_its_prose() -> None:
    turns = [
        [{"role": "assistant", "content": "I think so. " * 50}, {"role": "user", "content": "?"}],
        fenced("", "print(1)", long_output(2)),
    ]
    messages = history(*turns)
    result = compact(messages, under(size(messages) - 100))
    assert result.messages[2]["content"] == "[prose of turn 1 cut to fit the window]"


def test_the_summary_head_is_bounded() -> None:
    line = "w" * (10 * SUMMARY_HEAD_CHARS)
    messages = history(fenced("", "print(1)", line), fenced("", "print(2)", "ok"))
    summary = compact(messages, under(size(messages) - 100)).messages[3]["content"]
    assert summary.endswith("w" * SUMMARY_HEAD_CHARS + "…")
    assert len(summary) < SUMMARY_HEAD_CHARS + 120


def test_a_summary_line_is_never_summarised_again() -> None:
    turns = [fenced("", f"x{i} = {i}", "a" * 300 + "\n" + "x" * 1_000_000) for i in (1, 2, 3)]
    first = compact(history(*turns), under(3_000_000)).noted()
    summary = first[3]["content"]
    assert summary.startswith("[output of turn 1 (1,000,301 characters)")
    again = compact(first, under(size(first) - 1000)).messages
    assert again[3]["content"] == summary and again[5]["content"].startswith("[output of turn 2")


def test_code_of_keeps_fences_and_xml_calls_and_is_idempotent() -> None:
    reply = (
        "First I look.\n```python\nprint(1)\n```\nThen SQL:\n~~~~sql\nSELECT 1\n~~~~\n"
        'And <invoke name="run_code"><parameter name="code">x</parameter></invoke> done.\n'
        "``` inline `code` ```\n````bash\necho unclosed\n```\nstill inside\n"
    )
    code = code_of(reply)  # fenced blocks win over XML calls, as in what is run
    assert code == (
        "```python\nprint(1)\n```\n```sql\nSELECT 1\n```\n"
        "````bash\necho unclosed\n```\nstill inside\n````"
    )
    assert code_of(code) == code and code_of("no code here") == ""
    xml = 'So <invoke name="run_code"><parameter name="code">x = 1</parameter></invoke> ok'
    assert code_of(xml) == "```\nx = 1\n```" and code_of(code_of(xml)) == code_of(xml)


def test_with_note_adds_a_user_message_after_an_assistant_and_never_mutates() -> None:
    messages = [SYSTEM, QUESTION, {"role": "assistant", "content": "hi"}]
    before = copy.deepcopy(messages)
    assert with_note(messages, "N")[-1] == {"role": "user", "content": "N"}
    assert with_note(messages, "") == messages and messages == before
    assert with_note([SYSTEM, {"role": "user", "content": ""}], "N")[-1]["content"] == "N"


def test_fits_is_called_a_logarithmic_number_of_times() -> None:
    turns = [fenced("Prose.", f"x{i} = {i}", long_output(i, 300)) for i in range(1, 300)]
    turns.append(fenced("Prose.", "print(context)", long_output(300, 5000)))
    messages = history(*turns)
    newest_whole = size(with_note(history(turns[-1]), compaction_note(299, 299)))
    budgets = {
        size(messages) - 5000: (0, False),
        size(messages) // 3: (88, False),
        newest_whole: (299, False),
        newest_whole - 1: (299, True),
    }
    for budget, (dropped, cut) in budgets.items():
        fits, calls = counting(under(budget))
        result = compact(messages, fits)
        assert result.fits_after and (result.dropped_turns, result.newest_cut) == (dropped, cut)
        bound = 4 + math.ceil(math.log2(2 * len(turns))) + math.ceil(math.log2(size(messages)))
        assert len(calls) <= bound, (budget, len(calls))


# --- properties ---------------------------------------------------------------

TEXT = st.text(alphabet=st.sampled_from("ab \n`~x1<>"), max_size=120) | st.builds(
    lambda head, n: head + "\n" + "q" * n, st.text(max_size=30), st.integers(0, 1500)
)


@st.composite
def contents(draw: st.DrawFn, text: str) -> str | list[dict[str, Any]]:
    return parts(text) if draw(st.booleans()) else text


@st.composite
def turns(draw: st.DrawFn, number: int) -> list[Message]:
    if draw(st.booleans()):
        after = draw(st.sampled_from(["", "\nso"]))
        reply = f"{draw(TEXT)}\n```python\n{draw(TEXT)}\n```{after}"
        return [
            {"role": "assistant", "content": draw(contents(reply))},
            {"role": "user", "content": draw(contents(draw(TEXT)))},
        ]
    n = draw(st.integers(1, 2))
    turn = tool_turn(number, [draw(TEXT) for _ in range(n)], [draw(TEXT) for _ in range(n)])
    turn[0]["content"] = draw(st.sampled_from(["", None, "Let me see."]))
    if draw(st.booleans()):
        turn.append({"role": "user", "content": draw(contents(draw(TEXT)))})
    return turn


@st.composite
def histories(draw: st.DrawFn) -> list[Message]:
    count = draw(st.integers(0, 7))
    return history(*(draw(turns(i)) for i in range(1, count + 1)))


def newest_turn(messages: list[Message]) -> list[Message]:
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    return [] if last is None else messages[last:]


@settings(max_examples=300, deadline=None)
@given(histories(), st.integers(0, 110))
def test_compaction_properties(messages: list[Message], percent: int) -> None:
    fits = under(600 + size(messages) * percent // 100)
    before = copy.deepcopy(messages)
    result = compact(messages, fits)
    assert messages == before  # never mutates its input
    assert result.messages[:2] == [SYSTEM, QUESTION]
    assert_paired(result.messages)
    if result.fits_after:
        assert fits(result.noted()) and fits(result.messages)
    else:
        assert not fits(result.noted())
    assert compact(messages, fits) == result  # deterministic
    if fits(result.messages):  # compacting again changes nothing
        assert compact(result.messages, fits).messages == result.messages
    newest = newest_turn(messages)
    older = sum(m["role"] == "assistant" for m in messages) - 1
    if older >= 0 and fits(with_note([SYSTEM, QUESTION, *newest], compaction_note(older, older))):
        assert newest_turn(result.messages) == newest and not result.newest_cut
    if not result.changed:
        assert result.messages == messages


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(0, 6000), st.integers(0, 3000))
def test_compacting_a_compacted_history_shrinks_it_only_as_needed(
    messages: list[Message], budget: int, extra: int
) -> None:
    first = compact(messages, under(budget))
    again = compact(first.noted(), under(budget + extra))
    if first.fits_after:
        assert again.messages == first.noted() and not again.changed
