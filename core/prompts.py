"""The root model's prompts: core instructions, the environment's guide and
the context metadata. The context itself is never put in a prompt."""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "FALLBACK_PROMPT",
    "NO_CODE_PROMPT",
    "first_user_message",
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


def system_prompt(
    guide: str, meta: dict[str, Any], *, max_iterations: int, depth: int, max_depth: int
) -> str:
    """Core instructions + the environment's guide + the context metadata."""
    if max_depth <= depth:
        depth_note = " Sub-model calls are disabled here: solve it with code alone."
    else:
        depth_note = ""
    core = _CORE.format(max_iterations=max_iterations, depth_note=depth_note)
    shown = json.dumps(meta, ensure_ascii=False, default=str, indent=1)
    return f"{core}\n{guide}\n## The context (metadata only)\n```json\n{shown}\n```\n"


def first_user_message(question: str) -> str:
    return (
        f"Question: {question}\n\n"
        "Start by inspecting the context with code. Answer only through the environment."
    )


NO_CODE_PROMPT = (
    "No runnable code block was found in your reply, so nothing ran. Write your code in a "
    "fenced block tagged {tags} (for example ```{tag} ... ```), and stop after the block. "
    "Tool-call or XML syntax does not run here."
)

FALLBACK_PROMPT = (
    "You have used all your turns. Reply with one last code block that sets the answer to "
    "your best answer now, from what you have already computed. No more exploration."
)
