"""The files the shell runs: its start-up script and the commands on its PATH.

Commands (``bin/``, read-only to the shell):

* ``llm``, ``llm_batch``, ``rlm``: the host bridge's client
  (:mod:`polyrlm.bridge_client`, standard library only), copied in and run
  by the host's interpreter in isolated mode;
* ``to_json``, ``from_json``: :mod:`polyrlm.backends.bash.json_lines`;
* ``final``: a ``sh`` script that writes the answer file, which the host
  reads after every block (never parsed out of the output);
* one command per user tool, through the bridge client's ``tool NAME``
  (:mod:`polyrlm.backends.bash.tool_commands`).

The start-up script sets the shell up for the control protocol of
:mod:`polyrlm.backends.bash.shell`: it keeps the original stdout and stderr
as file descriptors 98 and 99 for the sentinels, makes ``exit`` end a block
rather than the shell, and defines the helper functions (all named
``__polyrlm_*``).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from polyrlm import bridge_client
from polyrlm.backends.bash import json_lines
from polyrlm.backends.bash.tool_commands import tool_prelude
from polyrlm.sandbox import PythonLayout
from polyrlm.tools import Tool

__all__ = [
    "ANSWER_FILE",
    "COMMANDS",
    "INIT_SCRIPT",
    "STATE_FUNCTION",
    "block_line",
    "query_line",
    "write_commands",
]

#: Name of the answer file in the answer folder.
ANSWER_FILE = "answer"

#: Sourced once when the shell starts (and again after a restart).
INIT_SCRIPT = r"""
set +H +o history        # no `!` history expansion in the model's strings
shopt -s expand_aliases
alias exit=return        # `exit N` ends the block with status N; the shell stays
unset HISTFILE PROMPT_COMMAND MAILCHECK
PS1='' PS2='' PS0='' PS4='+ '
export -n PS1 PS2
exec 98>&1 99>&2         # the sentinels' own copies of stdout and stderr
trap 'builtin kill -INT $$' USR1   # the host's interrupt: abort the whole block
__polyrlm_last=0
__polyrlm_ret() { return "$1"; }
__polyrlm_end() {
  local s=$2
  [ "$1" = 0 ] || s=$1   # a line aborted by SIGINT: $? is 130
  __polyrlm_last=$s
  builtin printf '%s %s\n' "$3" "$s" >&98
  builtin printf '%s %s\n' "$3" "$s" >&99
  return 0               # never fail here: the model may have run `set -e`
}
"""

#: Prints one line per variable (``v NAME ATTRIBUTES SIZE``) and per function
#: (``f NAME``), tab-separated, for ``read_state``.
STATE_FUNCTION = r"""
__polyrlm_state() {
  local -
  set +u
  local IFS=$' \t\n' __polyrlm_n __polyrlm_a __polyrlm_s   # the model may have set IFS
  for __polyrlm_n in $(compgen -v); do
    case $__polyrlm_n in __polyrlm_*) continue ;; esac
    __polyrlm_a=${!__polyrlm_n@a}
    case $__polyrlm_a in
      *[aA]*) eval "__polyrlm_s=\${#$__polyrlm_n[@]}" ;;
      *) eval "__polyrlm_s=\${#$__polyrlm_n}" ;;
    esac
    builtin printf 'v\t%s\t%s\t%s\n' "$__polyrlm_n" "$__polyrlm_a" "$__polyrlm_s"
  done
  for __polyrlm_n in $(compgen -A function); do
    case $__polyrlm_n in __polyrlm_*) continue ;; esac
    builtin printf 'f\t%s\n' "$__polyrlm_n"
  done
}
"""

_FINAL = """#!/bin/sh
# final TEXT... | ... | final: set the answer; the host reads it after the block.
answer={answer}
if [ "$#" -gt 0 ]; then
  printf '%s' "$*" > "$answer.part" || exit 1
elif [ -p /dev/stdin ] || [ -f /dev/stdin ] || [ -S /dev/stdin ]; then
  cat > "$answer.part" || exit 1
else
  echo 'final: no answer given: use final TEXT, or pipe it in: ... | final' >&2
  exit 2
fi
if [ ! -s "$answer.part" ]; then
  rm -f "$answer.part"
  echo 'final: the answer is empty; nothing was set' >&2
  exit 1
fi
mv -f "$answer.part" "$answer"
"""

_PYTHON_COMMAND = """#!/bin/sh
{prelude}{env}exec {python} -I -S {script} {command} "$@"
"""

#: Command name -> (file copied into bin/, its first argument).
_PYTHON_COMMANDS = {
    "llm": ("bridge_client.py", "llm"),
    "llm_batch": ("bridge_client.py", "llm_batch"),
    "rlm": ("bridge_client.py", "rlm"),
    "to_json": ("json_lines.py", "to_json"),
    "from_json": ("json_lines.py", "from_json"),
}
#: The backend's own commands (no tool may take their names).
COMMANDS = ("final", *_PYTHON_COMMANDS)


def write_commands(
    bin_dir: Path,
    *,
    guest_bin: str,
    answer_path: str,
    python: PythonLayout,
    tools: Sequence[Tool] = (),
) -> None:
    """Write the commands into ``bin_dir``; ``guest_bin`` is where the shell
    sees that folder, ``answer_path`` where it sees the answer file,
    ``python`` where it sees the host's interpreter; ``tools`` (their names
    checked already) each get a command."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for module in (bridge_client, json_lines):
        source = Path(str(module.__file__))
        (bin_dir / source.name).write_text(source.read_text())
    scripts = {"final": _FINAL.format(answer=shlex.quote(answer_path))}
    # Its own line: the bridge tests read the interpreter from the `exec` line.
    env = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in python.env.items())
    commands = {name: ("", script, command) for name, (script, command) in _PYTHON_COMMANDS.items()}
    for t in tools:
        assert t.name not in commands and t.name not in scripts, t.name  # checked at start
        commands[t.name] = (tool_prelude(t), "bridge_client.py", f"tool {t.name}")
    for name, (prelude, script, command) in commands.items():
        scripts[name] = _PYTHON_COMMAND.format(
            prelude=prelude,
            env=env,
            python=shlex.quote(python.base),
            script=shlex.quote(f"{guest_bin}/{script}"),
            command=command,
        )
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)


def block_line(block_path: str, token: str) -> str:
    """Control lines that run one block file in the shell itself.

    The block is sourced inside a ``{ ...; } || ...`` list: there ``set -e``
    cannot end the shell. It starts with ``$?`` set to the last block's
    status, reads stdin from /dev/null (so it never eats control lines), and
    writes to the sentinels' descriptors, so an ``exec >file`` in it ends
    with it.
    """
    path = shlex.quote(block_path)
    return (
        f'__polyrlm_st=0; {{ __polyrlm_ret "$__polyrlm_last"; . {path} </dev/null >&98 2>&99; }}'
        " || __polyrlm_st=$?\n"
        f'__polyrlm_end "$?" "$__polyrlm_st" {token}\n'
    )


def query_line(command: str, token: str, *, redirect: bool = True) -> str:
    """Control lines that run one of our own commands, keeping the last
    status (``redirect=False`` for the start-up script, before fd 98 exists)."""
    streams = " </dev/null >&98 2>&99" if redirect else ""
    return f'{{ {command}; }}{streams} || :\n__polyrlm_end 0 "${{__polyrlm_last:-0}}" {token}\n'
