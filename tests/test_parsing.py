"""Tests of polyrlm.parsing: fenced-block extraction, block selection, output truncation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polyrlm.parsing import (
    NON_CODE_TAGS,
    CodeBlock,
    extract_blocks,
    format_exec_observation,
    select_blocks,
    truncate_output,
)

PY = ("python", "py")


def note(cut: int) -> str:
    return f"\n[... {cut} characters cut: keep large results in variables and print slices ...]\n"


# -- extract_blocks: hand-written cases ----------------------------------------------------------


def test_several_blocks_in_order_with_prose_ignored() -> None:
    text = "Let me look.\n```python\nx = 1\nprint(x)\n```\nThen:\n```sql\nSELECT 1\n```\nDone."
    assert extract_blocks(text) == [
        CodeBlock("python", "x = 1\nprint(x)", True),
        CodeBlock("sql", "SELECT 1", True),
    ]


def test_tag_is_first_word_of_info_string_lowercased() -> None:
    assert extract_blocks("```Python title=x\npass\n```") == [CodeBlock("python", "pass", True)]
    assert extract_blocks("```   SQL  \nSELECT 1\n```")[0].tag == "sql"
    assert extract_blocks("```\nplain\n```") == [CodeBlock("", "plain", True)]


def test_tilde_fence_is_not_closed_by_backticks() -> None:
    text = "~~~python\na = '''\n```\n'''\n~~~~\nafter"
    assert extract_blocks(text) == [CodeBlock("python", "a = '''\n```\n'''", True)]


def test_four_backtick_fence_contains_three_backtick_line() -> None:
    text = "````markdown\n```python\nprint(1)\n```\n````"
    assert extract_blocks(text) == [CodeBlock("markdown", "```python\nprint(1)\n```", True)]


def test_fence_line_with_info_string_does_not_close() -> None:
    text = "```python\nx = 1\n```python\ny = 2\n```"
    assert extract_blocks(text) == [CodeBlock("python", "x = 1\n```python\ny = 2", True)]


def test_short_or_overindented_closing_line_does_not_close() -> None:
    text = "````\na\n```\n    ````\n````  \nrest"
    assert extract_blocks(text) == [CodeBlock("", "a\n```\n    ````", True)]


def test_unclosed_fence_runs_to_end_of_text() -> None:
    assert extract_blocks("text\n```python\nprint(1)\n") == [CodeBlock("python", "print(1)", False)]
    assert extract_blocks("```python") == [CodeBlock("python", "", False)]
    assert extract_blocks("```py\na\n```\n```py\nb") == [
        CodeBlock("py", "a", True),
        CodeBlock("py", "b", False),
    ]


def test_indented_fence_removes_up_to_its_indentation() -> None:
    text = "  ```python\n  a = 1\n    b = 2\n c = 3\nd = 4\n   ```"
    assert extract_blocks(text) == [CodeBlock("python", "a = 1\n  b = 2\nc = 3\nd = 4", True)]


def test_four_spaces_or_backtick_in_info_is_not_a_fence() -> None:
    assert extract_blocks("    ```python\nx\n    ```") == []
    assert extract_blocks("```py`thon\nx\n```") == [CodeBlock("", "", False)]
    assert extract_blocks("~~~ a`b\nx\n~~~") == [CodeBlock("a`b", "x", True)]


def test_crlf_line_endings() -> None:
    text = "Run:\r\n```python\r\nx = 1\r\n\r\nprint(x)\r\n```\r\n"
    assert extract_blocks(text) == [CodeBlock("python", "x = 1\n\nprint(x)", True)]


def test_empty_text_and_prose_without_fences() -> None:
    assert extract_blocks("") == []
    assert extract_blocks("Just prose, with `inline` code and `` ` `` ticks.\nFINAL(42)") == []


# -- select_blocks ---------------------------------------------------------------------------


def test_select_runnable_and_wrong_language() -> None:
    blocks = extract_blocks("```python\nx = 1\n```\n```sql\nSELECT 1\n```\n```\nuntagged\n```")
    runnable, wrong = select_blocks(blocks, PY)
    assert runnable == [CodeBlock("python", "x = 1", True)]
    assert wrong == [CodeBlock("sql", "SELECT 1", True)]


def test_untagged_blocks_are_the_fallback() -> None:
    blocks = extract_blocks("```\na = 1\n```\n```sql\nSELECT 1\n```\n```\nb = 2\n```")
    runnable, wrong = select_blocks(blocks, PY)
    assert [b.code for b in runnable] == ["a = 1", "b = 2"]
    assert [b.tag for b in wrong] == ["sql"]


def test_tags_compared_lowercased() -> None:
    blocks = [CodeBlock("Python", "x", True), CodeBlock("SQL", "y", True)]
    assert select_blocks(blocks, ["PYTHON"]) == ([blocks[0]], [blocks[1]])


def test_non_code_tags_are_neither_runnable_nor_wrong() -> None:
    blocks = [CodeBlock(tag, "42", True) for tag in sorted(NON_CODE_TAGS)]
    assert select_blocks([*blocks, CodeBlock("python", "x", True)], PY) == (
        [CodeBlock("python", "x", True)],
        [],
    )
    assert select_blocks(blocks, PY) == ([], [])


def test_blank_blocks_are_dropped() -> None:
    blocks = [CodeBlock("python", " \n\t", True), CodeBlock("sql", "", True)]
    blocks.append(CodeBlock("", "x = 1", True))
    # The blank python block does not disable the untagged fallback.
    assert select_blocks(blocks, PY) == ([CodeBlock("", "x = 1", True)], [])


# -- truncate_output and format_exec_observation: hand-written cases -------------------------


def test_truncate_small_numbers() -> None:
    assert truncate_output("abcdefghij", 6) == ("abcd" + note(4) + "ij", 4)
    assert truncate_output("abcdefghij", 1) == (note(9) + "j", 9)
    assert truncate_output("abcdefghij", 10) == ("abcdefghij", 0)
    assert truncate_output("", 1) == ("", 0)


@pytest.mark.parametrize("limit", [0, -5])
def test_truncate_rejects_limit_below_one(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        truncate_output("abc", limit)
    with pytest.raises(ValueError, match="limit"):
        format_exec_observation("abc", None, limit)


def test_observation_joins_output_and_error() -> None:
    assert format_exec_observation("out", "boom", 100) == ("out\nError:\nboom", 0)
    assert format_exec_observation("out\n", "boom", 100) == ("out\nError:\nboom", 0)
    assert format_exec_observation("", "boom", 100) == ("boom", 0)
    assert format_exec_observation("out", None, 100) == ("out", 0)
    assert format_exec_observation("out", "", 100) == ("out", 0)
    assert format_exec_observation("", None, 100) == ("(no output)", 0)
    assert format_exec_observation("abcdefghij", None, 6) == truncate_output("abcdefghij", 6)


def test_observation_keeps_short_error_whole_and_cuts_output() -> None:
    shown, cut = format_exec_observation("x" * 1000, "ValueError: bad", 60)
    assert shown.endswith("x\nError:\nValueError: bad")
    assert shown.startswith("x" * 30 + "\n[... 955 characters cut") and cut == 1000 + 15 - 60


def test_observation_keeps_tail_of_long_error() -> None:
    error = "Traceback\n" + "  frame\n" * 100 + "KeyError: 'k'"
    shown, cut = format_exec_observation("o" * 500, error, 90)
    assert shown.endswith(error[-30:]) and "KeyError: 'k'" in shown
    assert shown.startswith("o" * 40) and cut == 500 + len(error) - 90
    # A short output lends the error its unused budget.
    shown, cut = format_exec_observation("ok", error, 90)
    assert shown.startswith("ok\nError:\n") and shown.endswith(error[-88:])


# -- properties ------------------------------------------------------------------------------

# Characters that make fences, indentation and line breaks likely; "\r" is left out of the
# block contents because it is a line ending and would not survive the round trip.
_CHARS = st.one_of(st.sampled_from("`~ \n\tpx"), st.characters(exclude_characters="\r"))


def _fence_like(line: str) -> bool:
    rest = line[min(3, len(line) - len(line.lstrip(" "))) :]
    return rest.startswith(("```", "~~~"))


def _without_fence_lines(text: str) -> str:
    return "\n".join(line for line in text.split("\n") if not _fence_like(line))


_PLAIN = st.text(_CHARS, max_size=60).map(_without_fence_lines)


@settings(max_examples=200, deadline=None)
@given(codes=st.lists(_PLAIN, max_size=5), data=st.data())
def test_assembled_reply_round_trips(codes: list[str], data: st.DataObject) -> None:
    prose = data.draw(st.lists(_PLAIN, min_size=len(codes) + 1, max_size=len(codes) + 1))
    text = prose[0] + "".join(
        f"\n```python\n{code}\n```\n{after}" for code, after in zip(codes, prose[1:], strict=True)
    )
    assert extract_blocks(text) == [CodeBlock("python", code, True) for code in codes]


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.one_of(st.sampled_from("`~ \r\n\tpx"), st.characters())))
def test_extract_never_raises_and_code_comes_from_input_lines(text: str) -> None:
    lines = re.split(r"\r\n|\r|\n", text)
    blocks = extract_blocks(text)
    for block in blocks:
        assert block.tag == block.tag.lower() and not any(c.isspace() for c in block.tag)
        for code_line in block.code.split("\n"):
            assert any(line.endswith(code_line) for line in lines)
    # An unclosed block runs to the end of the text, so only the last one can be unclosed.
    assert all(block.closed for block in blocks[:-1])


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=3000), limit=st.integers(1, 2000))
def test_truncate_invariants(text: str, limit: int) -> None:
    shown, cut = truncate_output(text, limit)
    if len(text) <= limit:
        assert (shown, cut) == (text, 0)
        return
    head = limit * 2 // 3
    tail = limit - head
    assert cut + limit == len(text)
    assert shown.startswith(text[:head]) and shown.endswith(text[len(text) - tail :])
    assert shown == text[:head] + note(cut) + text[len(text) - tail :]


# The error's own cut note, "[... N earlier characters of the error cut ...]\n", is short.
_ERROR_NOTE_MAX = 60


@settings(max_examples=200, deadline=None)
@given(
    output=st.text(max_size=3000),
    error=st.none() | st.text(max_size=3000),
    limit=st.integers(1, 2000),
)
def test_observation_bounds(output: str, error: str | None, limit: int) -> None:
    shown, cut = format_exec_observation(output, error, limit)
    err = error or ""
    total = len(output) + len(err)
    # Exactly `limit` characters of output and error are kept when they do not all fit.
    assert cut == max(0, total - limit)
    assert len(shown) <= limit + len(note(total)) + len("\nError:\n") + _ERROR_NOTE_MAX
    if err:
        keep = min(len(err), max(1, limit // 3))
        assert shown.endswith(err[len(err) - keep :])
        if output and total + len("\nError:\n") <= limit:
            assert shown.startswith(output) and cut == 0
    else:
        assert (shown, cut) == (truncate_output(output, limit) if output else ("(no output)", 0))
