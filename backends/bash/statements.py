"""Where the complete command lines of a Bash block being written end, for
pipelined turns (:mod:`polyrlm.pipeline`): bash's own parser decides.

The lines so far are complete commands when ``bash -n`` reads them without
an error or a warning (an open ``if``, loop, quote or here-document is one)
and the last line does not end in a ``\\`` (a continued line). Bash runs a
block command by command anyway (a later syntax error leaves the earlier
commands run), so running the block part by part changes nothing, with
three exceptions that act on a sourced block as a whole: ``return`` (ends
the block), ``exec`` (its redirections last to the block's end) and
``trap``. A block stops being pipelined at the first line holding one of
those words; it runs on from there as one part.
"""

from __future__ import annotations

import re
import shutil
import subprocess

__all__ = ["BASH_PARSE_TIMEOUT_S", "WHOLE_BLOCK_WORDS", "bash_ready"]

#: Seconds ``bash -n`` may take to read the lines so far.
BASH_PARSE_TIMEOUT_S = 5.0
#: Commands that act on the sourced block as a whole: no pipelining past them.
WHOLE_BLOCK_WORDS = ("return", "exec", "trap")
_WHOLE = re.compile(rf"(?<![\w$-])({'|'.join(WHOLE_BLOCK_WORDS)})(?![\w-])")


def bash_ready(code: str) -> int:
    """Characters at the start of ``code`` (complete lines of a Bash block
    being written) that are whole commands safe to run now; 0: none."""
    if not code.endswith(("\n", "\r")) or code.rstrip("\r\n").endswith("\\"):
        return 0
    if _WHOLE.search(code) or not code.strip():
        return 0
    bash = shutil.which("bash")
    if bash is None:
        return 0
    try:
        done = subprocess.run(
            [bash, "--norc", "--noprofile", "-n"],
            input=code.encode("utf-8", "surrogateescape"),
            capture_output=True,
            timeout=BASH_PARSE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return len(code) if done.returncode == 0 and not done.stderr.strip() else 0
