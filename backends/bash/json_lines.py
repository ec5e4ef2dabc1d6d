"""``to_json`` and ``from_json``: shell commands between text and the JSON
string lines that ``llm_batch`` reads and writes.

Standard library only: the shell runs this file with the host's interpreter
in isolated mode (``python -I -S``), inside the sandbox, without polyrlm.

* ``to_json [-p PROMPT]``: each stdin line becomes one JSON string line;
* ``to_json [-p PROMPT] FILE...``: each file's whole text becomes one line;
* ``to_json -t TEXT``: TEXT itself as one line;
* ``from_json``: each JSON string line back to its text (one line each, so a
  reply with newlines spans several lines; ``jq -r .`` does the same).

With ``-p PROMPT`` every item is ``PROMPT``, a blank line, then the text (as
``llm PROMPT`` builds its prompt from piped text).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence

__all__ = ["from_json", "main", "to_json"]


def _item(prompt: str | None, text: str) -> str:
    line = f"{prompt}\n\n{text}" if prompt else text
    return json.dumps(line, ensure_ascii=False)


def to_json(
    lines: Iterable[str], files: Sequence[str], prompt: str | None, text: str | None
) -> Iterable[str]:
    """The JSON string lines for the given input (see the module doc)."""
    if text is not None:
        yield _item(prompt, text)
        return
    if files:
        for name in files:
            with open(name, encoding="utf-8", errors="replace") as fh:
                yield _item(prompt, fh.read())
        return
    for line in lines:
        yield _item(prompt, line[:-1] if line.endswith("\n") else line)


def from_json(lines: Iterable[str]) -> Iterable[str]:
    """The text of each JSON string line; blank lines are skipped."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number} is not JSON ({exc}): {line[:80]!r}") from None
        yield value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("to_json", "from_json"):
        print("usage: to_json [-p PROMPT] [-t TEXT | FILE...] | from_json", file=sys.stderr)
        return 2
    command = args.pop(0)
    # Lines end at "\n" only (as for wc, sed, grep): a "\r" stays in its line.
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n")
    try:
        if command == "from_json":
            if args:
                print("usage: ... | from_json (no arguments)", file=sys.stderr)
                return 2
            for text in from_json(stdin):
                print(text)
            sys.stdout.flush()
            return 0
        parser = argparse.ArgumentParser(prog="to_json", description=__doc__)
        parser.add_argument("-p", "--prompt", help="put PROMPT and a blank line before each item")
        parser.add_argument("-t", "--text", help="one item: TEXT itself")
        parser.add_argument("files", nargs="*", help="one item per file (its whole text)")
        options = parser.parse_args(args)
        for line in to_json(stdin, options.files, options.prompt, options.text):
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader stopped early (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError) as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
