"""The prompt guide of the ``bash`` backend: the context as files, the
commands, the answer idiom, and shell idioms to peek, search, partition and
map; and, for a typed run or one with user tools, how ``final`` takes JSON
text and how each tool is called as a command. Programs that may be missing
(``rg``, ``jq``) are mentioned only when the host has them."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence

from polyrlm.answers import AnswerType
from polyrlm.backends.bash.tool_commands import tool_usage
from polyrlm.tools import Tool

__all__ = [
    "BashGuides",
    "bash_answer_guide",
    "bash_compact_guide",
    "bash_guide",
    "bash_tools_guide",
]

_GUIDE = """\
## Your environment: a persistent bash shell ({flavour})

Write bash in ```bash blocks; one block per reply is best. The shell persists between
blocks: the working directory, variables, functions and files stay. Only a truncated view
of the output comes back to you, so write big results to files and print summaries
(`head`, `wc -l`, `sort | uniq -c | sort -rn | head`). Each block reads stdin from
/dev/null and may run {timeout} s; past that, it is interrupted and every process the shell
started is stopped (your variables and files stay). A block whose last command fails
(non-zero exit status) is reported as an error, with the status. `exit N` ends the block,
not the shell; `set -e` has no effect here.

The context ({hint}), read-only:
- `$CONTEXT`: {context_role}
- `$CONTEXT_DIR`: the folder of the context's files. Never print the context whole.
{sandbox}
Commands:
- `llm PROMPT`: ask a sub-model about the text piped in (appended to the prompt after a
  blank line); its reply goes to stdout: `head -c 50000 "$CONTEXT" | llm "List the people
  named:"`. With nothing on stdin it fails (`llm --no-input PROMPT` asks with no text).
  The sub-model is strong and has a large window (hand it up to ~100,000 characters at
  once), but each call costs time and money: prefer few large, focused prompts.
  `llm --schema SCHEMA PROMPT` is a typed call: SCHEMA is a JSON Schema (an object, in
  single quotes), and the reply comes back as JSON on one line that validates against it
  (or the call fails).
- `llm_batch`: many sub-model calls at once, concurrently. Reads one JSON string per line
  (one prompt each) and writes one JSON string per line: the replies, in input order. A
  failed item's reply starts with "[sub-call failed: ...". Make the input with `to_json`
  and read the replies with `from_json`{jq}.
- `to_json [-p PROMPT] [FILE...]`: each stdin line, or each FILE's whole text, as one JSON
  string line; with `-p`, each item is PROMPT, a blank line, then the text.
  `to_json -t TEXT` makes one item of TEXT. `from_json`: JSON string lines back to text.
- `rlm PROMPT [FILE]`: like `llm`, but a recursive model with a shell of its own over
  FILE's text (a plain sub-model call at the depth limit).
- `final TEXT` or `... | final`: set your answer; the run ends after this block. The answer
  is read from here, never from your prose; several lines are fine.

Examples:
```bash
# peek
wc -c -l "$CONTEXT"; head -n 5 "$CONTEXT"; ls "$CONTEXT_DIR" | head
```
```bash
# search
{search}
```
```bash
# partition + map + reduce
mkdir -p parts && split -C 100000 -d -a 4 "$CONTEXT" parts/part-
to_json -p "List every date in this text, one per line:" parts/part-* | llm_batch > replies.jsonl
from_json < replies.jsonl | sed '/^\\s*$/d' | sort -u > dates.txt
wc -l < dates.txt; head dates.txt
```
```bash
final "$(wc -l < dates.txt) distinct dates"
```
"""

_SANDBOXED = """\
This shell runs in a sandbox (bubblewrap): no network, a read-only system; only the
working directory ($HOME, where you start) and /tmp are writable. Memory, processes and
disk are capped; past a cap every process is stopped and the shell restarted.
"""

_UNSANDBOXED = """\
This shell is NOT sandboxed: it runs on the host as the host's user, with its files and
network. Do not change anything outside the working directory ($HOME, where you start).
"""


def bash_guide(*, hint: str, context_is_folder: bool, sandboxed: bool, timeout_s: float) -> str:
    """The guide for one environment, with its context and limits written in."""
    search = 'grep -n -i -m 20 "needle" "$CONTEXT"'
    if shutil.which("rg"):
        search += '\nrg -n -i -m 20 "need(le|les)" "$CONTEXT_DIR"   # ripgrep: fast, recursive'
    else:
        search += '\ngrep -rn -E -m 20 "need(le|les)" "$CONTEXT_DIR" | head -n 40'
    if context_is_folder:
        role = 'the same folder (`ls "$CONTEXT" | head`; search it with `grep -rn`)'
    else:
        role = "the context's file"
    return _GUIDE.format(
        flavour="sandboxed" if sandboxed else "NOT sandboxed",
        timeout=f"{timeout_s:g}",
        hint=hint,
        context_role=role,
        sandbox=_SANDBOXED if sandboxed else _UNSANDBOXED,
        jq=" (or `jq -R .` and `jq -r .`)" if shutil.which("jq") else "",
        search=search,
    )


# The compact profile's guide; its example's only literal is a placeholder.
_COMPACT = """\
## The environment: a bash shell ({flavour})
Write bash in a ```bash block. Files and variables persist between replies.
- `$CONTEXT`: {context_role} ({hint}). Print only small parts of it.
- `llm PROMPT`: a sub-model's reply to PROMPT about the text piped in.
- `final TEXT`: sets your answer and ends the run.
Print the lines where a word occurs (put the word in place of WORD):
```bash
grep -n -i -m 3 -F "WORD" {where} | cut -c 1-600
```
"""


def bash_compact_guide(*, hint: str, context_is_folder: bool, sandboxed: bool) -> str:
    """The compact profile's guide (:meth:`Environment.compact_guide`)."""
    return _COMPACT.format(
        flavour="sandboxed" if sandboxed else "NOT sandboxed",
        context_role="the input's folder" if context_is_folder else "the input's file",
        hint=hint,
        where='-r "$CONTEXT"' if context_is_folder else '"$CONTEXT"',
    )


_CHECKED = (
    "The host checks the answer: one that does not validate comes back to you with the "
    "errors, and you set it again."
)


def bash_answer_guide(answer_type: AnswerType) -> str:
    """A typed answer: its JSON Schema, and ``final`` taking JSON as its text."""
    if answer_type.is_text:
        how = "The answer is text, given to `final` as usual (not JSON-quoted)"
    else:
        how = (
            'The answer is JSON, given to `final` as its text: `final "$json"`, or '
            "`... | final` (a command's JSON output piped in). Write JSON literals in single "
            "quotes, so the shell keeps their double quotes"
        )
        if shutil.which("jq"):
            how += "; `jq -n` or `jq -c` builds it from pieces"
    return (
        "## The answer's type\n"
        f"{how}. It must validate against this JSON Schema:\n"
        f"```json\n{answer_type.json_text()}\n```\n{_CHECKED}\n"
    )


def bash_tools_guide(tools: Sequence[Tool]) -> str:
    """The user's tools, each as a command with its arguments' JSON Schema."""
    first = tools[0].name if tools else "NAME"
    listed = "\n".join(f"- {tool_usage(t)}" for t in tools)
    return (
        "## Your tools\n"
        "The user's functions, as commands; they run on the host, not in this shell. Each "
        "takes its named arguments as one JSON object (ARGUMENTS, a JSON Schema below), as "
        f"its one argument in single quotes (`{first} '{{...}}'`) or on stdin "
        f"(`... | {first}`), and prints its result as JSON on one line (`prints`: its JSON "
        "Schema). A failed call exits non-zero with the error on stderr. For a string "
        'argument made of text, `to_json -t "$text"` prints it JSON-quoted.\n'
        f"{listed}\n"
    )


class BashGuides:
    """Mixed in before :class:`~polyrlm.environment.Environment`: the typed
    answer and the tools shown the bash way."""

    def answer_guide(self, answer_type: AnswerType) -> str:
        return bash_answer_guide(answer_type)

    def answer_code(self, text: str) -> str | None:
        return "final " + shlex.quote(text)

    def tools_guide(self, tools: Sequence[Tool]) -> str:
        return bash_tools_guide(tools)
