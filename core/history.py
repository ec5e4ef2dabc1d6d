"""Fit the root model's conversation into its context window by compacting
the oldest turns first.

Why: the root history grows by a turn per iteration, and a small model's
window (2,048 tokens, say) is outgrown within a few turns; the run then dies
on a refused call. The state the model works on lives in the environment, not
in the conversation, so older outputs can be shortened without losing
anything that code cannot show again (as the paper's implementation and its
peers do).

Shape: a *prefix* (every message before the first assistant message: the
system prompt and the question), then *turns*: an assistant message and the
messages that follow it up to the next assistant message (its ``tool``
results and the user observation). The last turn is the *newest*.

Rules, tried in this order until ``fits`` says yes (``fits`` judges each
candidate with the note appended, exactly as the caller sends it):

1. The messages fit: returned as they are, no note.
2. Older turns are *shortened*, oldest first: the assistant message keeps
   only its code (fenced blocks and XML-style calls, joined by newlines; its
   ``tool_calls`` are kept whole) and drops its prose; each observation (a
   ``user`` or ``tool`` message of the turn) becomes one summary line with
   its length and the head of its first non-empty line. A shortened form is
   used only where it is shorter, and a summary line is never summarised
   again, so compacting is idempotent.
3. Shortened older turns are *dropped*, oldest first, each turn whole (an
   assistant message with its ``tool`` results: no pair is ever split).
4. Last resort, with every older turn dropped: the newest turn's assistant
   keeps only its code, and each text of the newest turn is cut to its head
   and tail, down to :data:`NEWEST_MIN_CHARS` characters each.

The prefix is never changed. Steps 2-3 form one ladder of ever shorter
candidates, searched by bisection; step 4 bisects the newest turn's length:
``fits`` is called O(log turns + log characters) times. Messages left alone
are the input's own dicts; changed ones are new dicts (content flattened to
text); the input is never mutated. The same input gives the same output.
Pass the full history each time; send :meth:`Compaction.noted`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from polyrlm.parsing import extract_blocks, xml_call_code
from polyrlm.provider import message_text

__all__ = [
    "COMPACTION_NOTE",
    "NEWEST_MIN_CHARS",
    "REPLY_ROOM_TOKENS",
    "SUMMARY_HEAD_CHARS",
    "Compaction",
    "code_of",
    "compact",
    "compaction_note",
    "fit_window",
    "with_note",
]

Message = dict[str, Any]

#: Characters of an observation's first line kept in its summary line.
SUMMARY_HEAD_CHARS = 200
#: The shortest, in characters, each text of the newest turn is cut to (the minimal form).
NEWEST_MIN_CHARS = 400
#: What the model is told when anything was compacted.
#: Tokens kept free for the root's reply when its history is compacted to
#: fit the window (at most a quarter of the window; less if the model's
#: output limit is lower).
REPLY_ROOM_TOKENS = 4_096

COMPACTION_NOTE = (
    "Older outputs were shortened to fit the model's context window; your variables "
    "and the context in the environment are untouched; re-run code to see an output again."
)
_NOTE = "[{note} Turns compacted: {turns}; oldest removed: {dropped}.]"
_SUMMARY_PREFIX = "[output of turn "
_SUMMARY = (
    _SUMMARY_PREFIX + "{turn} ({size:,} characters) cut to fit the window; "
    "the environment's variables are untouched] {head}"
)
_PROSE_CUT = "[prose of turn {turn} cut to fit the window]"
_CUT = "\n[... {cut:,} characters of turn {turn} cut to fit the window ...]\n"


@dataclass(frozen=True)
class Compaction:
    """What :func:`compact` made of a history."""

    messages: list[Message]  # the history to send, without the note
    note: str  # "" when nothing was compacted; else appended to the last message
    fits_after: bool  # whether ``noted()`` fits (False: even the minimal form is too long)
    compacted_turns: int = 0  # turns shortened, dropped or cut (the newest included)
    dropped_turns: int = 0  # oldest turns removed whole
    newest_cut: bool = False  # the newest turn was shortened (the last resort)

    @property
    def changed(self) -> bool:
        return bool(self.note)

    def noted(self) -> list[Message]:
        """The messages with the note appended: what the caller sends."""
        return with_note(self.messages, self.note)


def compaction_note(turns: int, dropped: int) -> str:
    return _NOTE.format(note=COMPACTION_NOTE, turns=turns, dropped=dropped)


def with_note(messages: Sequence[Message], note: str) -> list[Message]:
    """A new list with ``note`` appended to the last message when that is an
    observation (``user`` or ``tool``), else added as a user message."""
    out = list(messages)
    if not note:
        return out
    last = out[-1] if out else None
    if last is None or last.get("role") not in ("user", "tool"):
        return [*out, {"role": "user", "content": note}]
    content = last.get("content")
    if isinstance(content, list):
        out[-1] = {**last, "content": [*content, {"type": "text", "text": "\n\n" + note}]}
    else:
        out[-1] = {**last, "content": f"{content}\n\n{note}" if content else note}
    return out


def code_of(text: str) -> str:
    """The code of a reply: its fenced blocks (re-fenced with their tag), or
    failing those the code of its XML-style calls, joined by newlines in
    order (what :mod:`polyrlm.parsing` would run). Applied to its result,
    it gives it back."""
    blocks = [(b.tag, b.code) for b in extract_blocks(text)]
    return "\n".join(
        _fenced(tag, code) for tag, code in blocks or [("", c) for c in xml_call_code(text)]
    )


def _fenced(tag: str, code: str) -> str:
    # Longer than any backtick run in the code, so the code cannot close it.
    runs = [len(line) - len(line.lstrip("`")) for line in code.splitlines()]
    fence = "`" * max(3, *(r + 1 for r in runs)) if runs else "```"
    return f"{fence}{tag}\n{code}\n{fence}"


def _retext(message: Message, text: str) -> Message:
    """The message with ``text`` as its content, or itself when that is its text."""
    if text == message_text(message):
        return message
    return {**message, "content": text}


def _summary(text: str, turn: int) -> str:
    if text.startswith(_SUMMARY_PREFIX):
        return text  # already a summary line
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    head = first[:SUMMARY_HEAD_CHARS] + ("…" if len(first) > SUMMARY_HEAD_CHARS else "")
    line = _SUMMARY.format(turn=turn, size=len(text), head=head).rstrip()
    return line if len(line) < len(text) else text


def _code_only(message: Message, turn: int) -> Message:
    text = message_text(message)
    code = code_of(text)
    if not code and not message.get("tool_calls"):
        code = _PROSE_CUT.format(turn=turn)
    return _retext(message, code) if len(code) < len(text) else message


def _shortened(turn: list[Message], number: int) -> list[Message]:
    """An older turn in its shortened form (rule 2)."""
    return [
        _code_only(m, number)
        if m.get("role") == "assistant"
        else _retext(m, _summary(message_text(m), number))
        for m in turn
    ]


def _cut(text: str, limit: int, turn: int) -> str:
    """``text`` in at most ``limit`` characters: its head and tail around a marker."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(_CUT.format(cut=len(text), turn=turn)))
    head = (keep + 1) // 2
    tail = text[len(text) - (keep - head) :] if keep > head else ""
    return text[:head] + _CUT.format(cut=len(text) - keep, turn=turn) + tail


def _turns(messages: Sequence[Message]) -> tuple[list[Message], list[list[Message]]]:
    """The prefix and the turns (each an assistant message and what follows)."""
    prefix: list[Message] = []
    turns: list[list[Message]] = []
    for message in messages:
        if message.get("role") == "assistant":
            turns.append([message])
        elif turns:
            turns[-1].append(message)
        else:
            prefix.append(message)
    return prefix, turns


def _first(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The least step in ``(low, high]`` that is ``ok``, given ``ok(high)`` and
    not ``ok(low)`` (bisection: monotone ``ok`` assumed, ``ok(result)`` always true)."""
    while high - low > 1:
        middle = (low + high) // 2
        if ok(middle):
            high = middle
        else:
            low = middle
    return high


def compact(messages: Sequence[Message], fits: Callable[[list[Message]], bool]) -> Compaction:
    """The history ``messages`` made to fit by the rules of this module.

    ``fits(candidate)`` says whether a list of messages (the note appended)
    fits the window less the room for the reply; it is called
    O(log turns + log characters) times."""
    if fits(list(messages)):
        return Compaction(list(messages), note="", fits_after=True)
    prefix, turns = _turns(messages)
    if not turns:
        return Compaction(list(messages), note="", fits_after=False)
    older, newest = turns[:-1], turns[-1]
    short = [_shortened(turn, number) for number, turn in enumerate(older, 1)]
    count = len(older)

    def ladder(step: int) -> Compaction:  # rules 2 (steps 1..count) and 3 (up to 2 * count)
        shortened, dropped = min(step, count), max(0, step - count)
        kept = [m for turn in short[dropped:shortened] for m in turn]
        kept += [m for turn in older[shortened:] for m in turn]
        note = compaction_note(shortened, dropped)
        return Compaction([*prefix, *kept, *newest], note, True, shortened, dropped)

    def ladder_fits(step: int) -> bool:
        return fits(ladder(step).noted())

    if count and ladder_fits(2 * count):
        return ladder(_first(0, 2 * count, ladder_fits))

    # Rule 4: the newest turn's code only, each text cut to ``limit`` characters.
    number = len(turns)
    bare = [_code_only(m, number) if m.get("role") == "assistant" else m for m in newest]
    texts = [message_text(m) for m in bare]

    def cut(limit: int) -> Compaction:
        cut_turn = [_retext(m, _cut(t, limit, number)) for m, t in zip(bare, texts, strict=True)]
        changed = cut_turn != newest
        note = compaction_note(count + changed, count)
        return Compaction([*prefix, *cut_turn], note, True, count + changed, count, changed)

    def cut_fails(limit: int) -> bool:
        return not fits(cut(limit).noted())

    longest = max(NEWEST_MIN_CHARS, *map(len, texts))
    if cut_fails(NEWEST_MIN_CHARS):
        return replace(cut(NEWEST_MIN_CHARS), fits_after=False)
    if not cut_fails(longest):
        return cut(longest)
    # the longest limit that fits: one less than the least limit that fails
    return cut(_first(NEWEST_MIN_CHARS, longest, cut_fails) - 1)


def fit_window(
    messages: list[Message],
    window: int | None,
    reply_tokens: int,
    count: Callable[[list[Message]], int],
) -> list[Message] | None:
    """The history to send to a model of ``window`` tokens, ``reply_tokens``
    (at most a quarter of the window) left for its reply: the messages as
    they are when they fit, else compacted (:func:`compact`, the note
    appended); None when even the most compacted form does not fit.
    ``count`` gives a candidate's tokens (the model's tokenizer)."""
    if window is None:
        return messages
    limit = window - min(reply_tokens, window // 4)

    def fits(candidate: list[Message]) -> bool:
        if sum(len(message_text(m)) for m in candidate) <= limit:
            return True  # a token is at least one character: no need to count
        return count(candidate) <= limit

    compaction = compact(messages, fits)
    if not compaction.changed:
        return messages
    return compaction.noted() if compaction.fits_after else None
