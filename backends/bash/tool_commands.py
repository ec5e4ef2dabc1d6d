"""The user's tools as shell commands, and the rule for their names.

Each tool of ``subcalls.tools`` becomes a command of its name in ``bin/``
(first on the shell's PATH, sandboxed or not), written by
:func:`polyrlm.backends.bash.scripts.write_commands`: ``NAME 'JSON'`` or
``... | NAME`` sends the named arguments to the host through the bridge
client's ``tool NAME`` and prints the result as JSON on one line; a failed
call exits 1 with the error on stderr; ``NAME --help`` prints its usage.
The tool runs on the host, never in the shell.

**Names.** A tool may not take a name the shell already has: a keyword or
builtin (it would win over the command), a command on the shell's PATH (the
tool would hide it, and the model's ``sort`` or ``head`` would call the
tool), or one of the backend's own commands and helpers. Such a name is
refused when the environment is made (:class:`~polyrlm.errors.ConfigError`;
rename it with ``polyrlm.tool(fn, name=...)``), never shadowed silently.
"""

from __future__ import annotations

import functools
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from polyrlm.errors import ConfigError
from polyrlm.schema_text import compact_json
from polyrlm.tools import Tool

__all__ = ["check_tool_names", "shell_words", "tool_prelude", "tool_usage"]

#: Seconds for ``bash`` to list its keywords and builtins.
SHELL_WORDS_TIMEOUT_S = 10.0
#: Prefix of the helper functions and variables the backend defines in the shell.
_OWN_PREFIX = "__polyrlm"


@functools.cache
def shell_words() -> frozenset[str]:
    """Bash's keywords and builtins (the host's bash: the sandbox runs it too)."""
    bash = shutil.which("bash") or "/bin/bash"
    listed = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", "compgen -k; compgen -b"],
        capture_output=True,
        text=True,
        timeout=SHELL_WORDS_TIMEOUT_S,
        check=True,
    )
    return frozenset(listed.stdout.split())


def _clash(name: str, own: frozenset[str], path: str) -> str | None:
    if name in own or name.startswith(_OWN_PREFIX):
        return "a command of the bash backend"
    if name in shell_words():
        return "a bash keyword or builtin"
    found = shutil.which(name, path=path)
    return f"a command on the shell's PATH ({found})" if found else None


def check_tool_names(tools: Sequence[Tool], own: Iterable[str], path: str) -> None:
    """Refuse tools whose names the shell already has: ``own`` are the
    backend's commands, ``path`` the shell's PATH after its ``bin/``."""
    taken = frozenset(own)
    clashes = [
        f"{t.name!r} is {why}" for t in tools if (why := _clash(t.name, taken, path)) is not None
    ]
    if clashes:
        raise ConfigError(
            "the bash backend makes each tool a command of its name, and "
            + "; ".join(clashes)
            + ": rename the tool (polyrlm.tool(fn, name=...)) rather than hide it"
        )


def tool_usage(t: Tool) -> str:
    """The tool as a command: usage, description, arguments' and result's
    schemas (its ``--help`` and its entry in the tools guide)."""
    lines = [f"`{t.name} ARGUMENTS`" + (f": {t.description}" if t.description else "")]
    lines.append(f"ARGUMENTS: {compact_json(t.parameters)}")
    lines.append(f"prints: {compact_json(t.returns or {})}")
    return "\n  ".join("\n".join(lines).splitlines())


def tool_prelude(t: Tool) -> str:
    """``sh`` lines run before the bridge client: ``--help``, and a clear
    error for arguments given as several words (not one JSON object)."""
    usage = shlex.quote(tool_usage(t).replace("`", ""))
    several = shlex.quote(
        f"{t.name}: give the named arguments as one JSON object, in single quotes "
        f"({t.name} '{{...}}') or on stdin (... | {t.name}); got "
    )
    return (
        f"case \"$1\" in -h|--help) printf '%s\\n' {usage}; exit 0 ;; esac\n"
        f'if [ "$#" -gt 1 ]; then echo {several}"$# words" >&2; exit 2; fi\n'
    )
