"""The root model's prompts: core instructions, the environment's guide and
the context metadata. The context itself is never put in a prompt."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyrlm.answers import AnswerType
    from polyrlm.tools import Tool

__all__ = [
    "ANSWER_INVALID_NOTE",
    "ANSWER_STILL_INVALID_NOTE",
    "COMPACT_OUTPUT_NOTE",
    "COMPACT_PROSE_ANSWER_CHARS",
    "COMPACT_REPEAT_OUTPUT_CHARS",
    "COMPACT_WINDOW_TOKENS",
    "FALLBACK_PROMPT",
    "NO_CODE_COMPACT_PROMPT",
    "NO_CODE_FIRST_COMPACT_PROMPT",
    "NO_CODE_PROMPT",
    "NO_CODE_QUESTION_COMPACT_PROMPT",
    "PROMPT_PROFILES",
    "REPEATED_BLOCK_COMPACT_NOTE",
    "REPEATED_BLOCK_NOTE",
    "RUN_CODE_TOOL",
    "TOOL_CHANNEL_NOTE",
    "XML_CALL_NOTE",
    "chosen_profile",
    "first_user_message",
    "json_answer_guide",
    "json_tools_guide",
    "no_code_note",
    "python_answer_guide",
    "python_tools_guide",
    "repeated_note",
    "run_code_tool",
    "system_prompt",
]

_CORE = """\
You are the root of a Recursive Language Model. You answer a question about a context
that is far too large to read at once. The context is NOT in this conversation: it is
loaded in a REPL environment, and you work on it by writing code that the environment
runs. After each reply, the output of your code comes back to you (truncated when long).

How to work:
1. Probe first: look at the context's size, structure and a few samples.
2. Plan: decide how to search, filter or split it so each piece is small enough to read.
3. Act, one code block per reply: search with code; hand large, focused pieces to
   sub-models (batched when there are many) and ask them for terse, structured output;
   keep intermediate results in variables rather than printing them.
4. Verify the result with code before you finish.
5. Finish by setting the answer inside the environment, as the guide below shows.
   Writing the answer in prose does nothing; only the environment's answer counts.

Stop your reply right after the code block: the environment's real output comes next.
Never invent output. Sub-model calls cost time and money: do not call them needlessly.
You have at most {max_iterations} replies.{depth_note}
"""

#: The prompt profiles (``RLM(prompt_profile=...)``): "full" for frontier models,
#: "compact" for small windows and small models, "auto" to choose by the window.
PROMPT_PROFILES = ("auto", "full", "compact")
#: "auto" chooses the compact profile for a root whose window is at most this many
#: tokens (a model litellm does not know, with no ``windows=`` entry, gets "full").
COMPACT_WINDOW_TOKENS = 16_384

# What a small model needs and can follow: the task, the loop, one block per
# reply, and where the answer goes. No plan it would recite step by step.
_CORE_COMPACT = (
    ("You answer a question about a long input that is not in this conversation: it is loaded\n")
    + """in the environment below. Each reply: one code block, then stop. The environment runs it
and shows you its output. Search the input with code, read what you find, then set the
answer in the environment as the guide shows. You have {max_iterations} replies.{depth_note}
"""
)


def chosen_profile(profile: str, window: int | None) -> str:
    """``profile`` itself, or for "auto" the one a root of ``window`` tokens gets."""
    if profile != "auto":
        return profile
    return "compact" if window is not None and window <= COMPACT_WINDOW_TOKENS else "full"


#: The name of the native tool that runs code (models with function calling).
RUN_CODE_TOOL = "run_code"

#: Added to the instructions when the root is offered the run_code tool.
TOOL_CHANNEL_NOTE = (
    "\nYou may run each block by calling the {tool} tool with the code (the same "
    "{language} the guide shows); its output comes back as the tool's result. Fenced "
    "blocks work too.\n"
)

#: Said after running code found in an XML-style tool call written as prose.
XML_CALL_NOTE = (
    "[Ran the code of the XML-style tool call in your reply. Here, write code in a fenced "
    "```{tag} block{or_tool}.]"
)


def run_code_tool(language: str) -> dict[str, Any]:
    """The run_code tool in OpenAI's function format (litellm translates it
    for every provider that has function calling)."""
    return {
        "type": "function",
        "function": {
            "name": RUN_CODE_TOOL,
            "description": (
                f"Run {language} code in the REPL environment that holds the context; state "
                "persists between calls. Returns what the code printed (truncated when long)."
            ),
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string", "description": f"{language} code"}},
                "required": ["code"],
            },
        },
    }


def system_prompt(
    guide: str,
    meta: dict[str, Any],
    *,
    max_iterations: int,
    depth: int,
    max_depth: int,
    tool_language: str | None = None,
    sub_models: Sequence[str] = (),
    profile: str = "full",
) -> str:
    """Core instructions + the environment's guide + the context metadata;
    ``tool_language`` when the root is offered the run_code tool;
    ``sub_models`` the other sub-models its code may name; ``profile``
    "full" or "compact" (shorter instructions, the metadata on one line
    without the preview)."""
    if max_depth <= depth:
        depth_note = " Sub-model calls are disabled here: solve it with code alone."
    else:
        depth_note = ""
    compact = profile == "compact"
    core = (_CORE_COMPACT if compact else _CORE).format(
        max_iterations=max_iterations, depth_note=depth_note
    )
    if tool_language is not None:
        core += TOOL_CHANNEL_NOTE.format(tool=RUN_CODE_TOOL, language=tool_language)
    if sub_models:
        names = ", ".join(repr(n) for n in sub_models)
        core += f"\nBesides the default sub-model, the model argument may name: {names}.\n"
    if compact:  # no preview: a small model echoes it back as its first reply
        kept = {k: v for k, v in meta.items() if k != "preview"}
        shown = json.dumps(kept, ensure_ascii=False, default=str)
        return f"{core}\n{guide}\nThe input (metadata only): {shown}\n"
    shown = json.dumps(meta, ensure_ascii=False, default=str, indent=1)
    return f"{core}\n{guide}\n## The context (metadata only)\n```json\n{shown}\n```\n"


def first_user_message(question: str, profile: str = "full", tag: str = "") -> str:
    if profile == "compact":
        return f"Question: {question}\nFirst search the input with code." if tag else question
    return (
        f"Question: {question}\n\n"
        "Start by inspecting the context with code. Answer only through the environment."
    )


NO_CODE_PROMPT = (
    "No runnable code block was found in your reply, so nothing ran. Write your code in a "
    "fenced block tagged {tags} (for example ```{tag} ... ```), and stop after the block. "
    "Tool-call or XML syntax does not run here."
)

#: Said instead of running a block identical to the one run just before it.
REPEATED_BLOCK_NOTE = (
    "Not run: this block is the same as the one you ran in turn {turn}, with nothing run "
    "since, so its output would be the same as then (above). Use that output: if it holds "
    "the answer, set the answer now; if not, write different code."
)

#: NO_CODE_PROMPT in the compact profile, for a reply of a few words and no code: a
#: small model often writes its answer as prose, so it is shown the block that would
#: set that text as the answer (it runs only if the model sends it).
NO_CODE_COMPACT_PROMPT = (
    "Nothing ran: your reply has no ```{tag} block. If {said} is your answer, reply with "
    "this block:\n```{tag}\n{code}\n```\nIf not, write code that finds the answer."
)
#: NO_CODE_PROMPT in the compact profile before any code ran: an answer then is a guess.
NO_CODE_FIRST_COMPACT_PROMPT = (
    "Nothing ran: your reply has no ```{tag} block, and the input has not been searched yet. "
    "Reply with a ```{tag} block that searches it."
)
#: NO_CODE_PROMPT in the compact profile for prose that only repeats words of the
#: question (a small model often names the thing asked about as its answer).
NO_CODE_QUESTION_COMPACT_PROMPT = (
    "Nothing ran: {said} is part of the question, not its answer. Reply with a ```{tag} "
    "block that searches the input for it and prints what the text says about it."
)
#: Added after a block's output in the compact profile, where a small model reads it.
COMPACT_OUTPUT_NOTE = "If this output answers the question, set the answer now."
#: Replies of at most this many characters (and one line) get NO_CODE_COMPACT_PROMPT.
COMPACT_PROSE_ANSWER_CHARS = 200
#: Characters of a repeated block's earlier output that REPEATED_BLOCK_COMPACT_NOTE shows.
COMPACT_REPEAT_OUTPUT_CHARS = 1_000

#: REPEATED_BLOCK_NOTE in the compact profile: the output is shown again (at most
#: COMPACT_REPEAT_OUTPUT_CHARS), next to the nudge, where a small model reads it.
REPEATED_BLOCK_COMPACT_NOTE = (
    "Not run: you ran this same block in turn {turn}, and its output would not change. "
    "It was:\n{output}\nIf it shows the answer, set the answer now, as the guide shows. "
    "If not, write different code."
)

ANSWER_INVALID_NOTE = (
    "[The answer you set does not validate against the answer's type, so the run goes "
    "on:\n{errors}\nFix it and set the answer again.]"
)

ANSWER_STILL_INVALID_NOTE = (
    "[The answer is still the one that did not validate; set a corrected answer.]"
)

FALLBACK_PROMPT = (
    "You have used all your turns. Reply with one last code block that sets the answer to "
    "your best answer now, from what you have already computed. No more exploration."
)


_CHECKED = (
    "The host checks the answer: one that does not validate comes back to you with the "
    "errors, and you set it again."
)


def json_answer_guide(answer_type: AnswerType) -> str:
    """A typed answer, for a language without types: its JSON Schema."""
    return (
        "## The answer's type\n"
        "The answer must be JSON (set as text, the guide's way) that validates against "
        f"this JSON Schema:\n```json\n{answer_type.json_text()}\n```\n{_CHECKED}\n"
    )


def python_answer_guide(answer_type: AnswerType) -> str:
    """A typed answer, for Python: ``TypedDict`` declarations and an annotation."""
    return (
        "## The answer's type\n"
        "Set the answer to a value of this type, made of dicts, lists and plain values "
        "(a TypedDict is a dict with those keys):\n"
        f"```python\n{answer_type.python_text()}\n```\n{_CHECKED}\n"
    )


def json_tools_guide(tools: Sequence[Tool]) -> str:
    """User tools, for a language without types: each as JSON."""
    listed = "\n".join(f"- {t.json_text()}" for t in tools)
    return (
        "## Your tools\n"
        "Functions of the user that run on the host; arguments and results are JSON.\n"
        f"{listed}\n"
    )


def python_tools_guide(tools: Sequence[Tool]) -> str:
    """User tools, for Python: each as a signature and its docstring."""
    listed = "\n".join(t.describe() for t in tools)
    return (
        "## Your tools\n"
        "Functions of the user that run on the host; call them like any function, with "
        "positional or named arguments. Arguments and results are JSON data (a TypedDict "
        "is a dict). A failed call raises SubCallError.\n"
        f"```python\n{listed}\n```\n"
    )


def repeated_note(profile: str, turn: int, output: str) -> str:
    """What a block identical to the one run in ``turn`` gets instead of running;
    the compact profile shows that ``output`` again."""
    if profile != "compact":
        return REPEATED_BLOCK_NOTE.format(turn=turn)
    shown = output[:COMPACT_REPEAT_OUTPUT_CHARS]
    return REPEATED_BLOCK_COMPACT_NOTE.format(turn=turn, output=shown)


def _from_question(said: str, question: str) -> bool:
    """Whether prose only repeats words of the question (quotes and case aside)."""
    bare = said.strip().strip("\"'`.,:;!?").strip().lower()
    return bool(bare) and bare in question.lower()


def no_code_note(
    profile: str,
    tags: Sequence[str],
    answer_code: Callable[[str], str | None],
    text: str,
    question: str,
    code_ran: bool,
) -> str:
    """What a reply without runnable code gets (``tags``: the environment's
    fence tags); in the compact profile a short line of prose is shown as the
    code that would answer it (``answer_code``: Environment.answer_code)."""
    said, tag = text.strip(), tags[0]
    if profile != "compact":
        return NO_CODE_PROMPT.format(tags=" or ".join(tags), tag=tag)
    if not code_ran:
        return NO_CODE_FIRST_COMPACT_PROMPT.format(tag=tag)
    short = 0 < len(said) <= COMPACT_PROSE_ANSWER_CHARS and "\n" not in said
    if short and _from_question(said, question):
        return NO_CODE_QUESTION_COMPACT_PROMPT.format(tag=tag, said=json.dumps(said))
    code = answer_code(said) if short else None
    if code is None:
        return NO_CODE_PROMPT.format(tags=" or ".join(tags), tag=tag)
    return NO_CODE_COMPACT_PROMPT.format(tag=tag, said=json.dumps(said), code=code)
