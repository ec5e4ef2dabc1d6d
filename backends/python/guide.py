"""The prompt guide shared by the Python-language backends."""

from __future__ import annotations

__all__ = ["python_compact_guide", "python_guide"]

_GUIDE = """\
## Your environment: a persistent Python REPL ({flavour})

Write Python in ```python blocks; one block per reply is best. Variables, imports
and functions persist between blocks. Only a truncated view of printed output comes
back to you, so keep large results in variables and print summaries or slices.

Available in the namespace:
- `context`: the input ({context_hint}). Never print it whole.
- `llm_query(prompt: str, model: str | None = None) -> str`: ask a sub-model. It is
  strong and has a large window (hand it up to ~100,000 characters at once), but each
  call costs time and money: prefer few large, focused prompts. Raises on failure.
- `llm_batch(prompts: list[str], model: str | None = None) -> list[str]`: many
  sub-model calls at once, concurrently; replies in input order. A failed item is a
  string starting with "[sub-call failed: ..." (isinstance `SubCallFailure`).
- Typed replies: `llm_query(prompt, schema=S)` and `llm_batch(prompts, schema=S)` with
  `S` a JSON Schema dict return JSON data that validates against it; where pydantic is
  importable `S` may also be a pydantic model, and each reply is an instance of it.
- `rlm_query(prompt: str, context=None) -> str` and `rlm_batch(prompts, contexts=None)
  -> list[str]`: like llm_query/llm_batch, but each call is a recursive language
  model with a REPL of its own over `context` (at the depth limit they are plain
  sub-model calls).
- `answer`: a dict. Finish by setting `answer["content"] = <your answer>` and
  `answer["ready"] = True`, or call `FINAL(<your answer>)`. The run ends as soon as
  the answer is ready; the answer is read from here, never from your prose.
{imports}
Examples:
```python
# peek
print(type(context), len(context)); print(context[:500])
```
```python
# search
import re
hits = [m.start() for m in re.finditer(r"needle", context)]
print(len(hits), [context[max(0, i - 100): i + 100] for i in hits[:3]])
```
```python
# partition + map + reduce
size = 100_000
chunks = [context[i:i + size] for i in range(0, len(context), size)]
replies = llm_batch([f"List every date in this text, one per line:\\n{{c}}" for c in chunks])
dates = sorted({{line for r in replies for line in r.splitlines() if line.strip()}})
print(len(dates), dates[:20])
```
```python
FINAL(f"{{len(dates)}} distinct dates")
```
"""


def python_guide(*, flavour: str, context_hint: str, imports: str) -> str:
    """The guide, with the backend's own notes filled in."""
    return _GUIDE.format(flavour=flavour, context_hint=context_hint, imports=imports)


# The compact profile's guide: what a small model uses, and one example whose
# only literal is a placeholder (a model copies an example's words as its own).
_COMPACT = """\
## The environment: Python ({flavour})
Write Python in a ```python block. Variables persist between replies.
- `context`: the input, {context_hint}. Print only small parts of it.
- `llm_query(prompt)`: a sub-model's reply to `prompt` (a str; include the text it must read).
- `FINAL(value)`: sets your answer and ends the run.
Print the text around each place a word occurs (put the word in place of WORD):
```python
import re
for m in list(re.finditer(re.escape("WORD"), context, re.IGNORECASE))[:3]:
    print(context[max(0, m.start() - 100):m.end() + 200])
```
"""


def python_compact_guide(*, flavour: str, context_hint: str) -> str:
    """The compact profile's guide (:meth:`Environment.compact_guide`)."""
    return _COMPACT.format(flavour=flavour, context_hint=context_hint)
