"""The bash backend's shell: persistence, timeouts, floods, statuses, restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from polyrlm.backends.bash.environment import BashEnvironment
from polyrlm.environment import SubCallFailure
from polyrlm.testing.contract import EchoSubCalls

Make = Callable[..., BashEnvironment]


def _factory(sandbox: bool | None, made: list[BashEnvironment]) -> Make:
    def factory(context: Any = "", subcalls: Any = None, **config: Any) -> BashEnvironment:
        cfg = BashEnvironment.Config(sandbox=sandbox, **config)
        env = BashEnvironment(subcalls or EchoSubCalls(), cfg)
        made.append(env)
        env.load_context(context)
        return env

    return factory


@pytest.fixture(params=[True, False], ids=["sandboxed", "unsandboxed"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    """Environments in both modes (the process handling differs)."""
    made: list[BashEnvironment] = []
    yield _factory(request.param, made)
    for env in made:
        env.close()


@pytest.fixture
def make_default() -> Iterator[Make]:
    """Environments in the default mode (sandboxed where bwrap is installed)."""
    made: list[BashEnvironment] = []
    yield _factory(None, made)
    for env in made:
        env.close()


def test_directory_variables_functions_and_files_persist(make: Make) -> None:
    env = make()
    first = env.execute(
        "mkdir sub && cd sub && echo data > f.txt\ny=(1 2 3); declare -A m=([k]=v)\n"
        'greet() { echo "hi $1"; }\nexport z=1'
    )
    assert first.error is None
    out = env.execute('pwd; greet you; echo "${#y[@]} ${m[k]}"; cat f.txt').output.splitlines()
    assert out[0].endswith("/work/sub") and out[1:] == ["hi you", "3 v", "data"]
    env.execute("cd ~")
    found = {v.name: v for v in env.read_state().variables}
    assert found["y"].type == "array" and found["y"].size == 3
    assert found["m"].type == "associative array" and found["greet"].type == "function"
    assert found["z"].type == "string, exported"
    assert found["./sub"].type == "directory" and found["./sub"].size == 1
    assert not {"PATH", "HOME", "CONTEXT", "OLDPWD"} & set(found)  # not the model's
    assert not any(name.startswith("__polyrlm") for name in found)


def test_status_is_reported_and_carried_to_the_next_block(make: Make) -> None:
    env = make()
    failed = env.execute("echo out; echo boom >&2; exit 3; echo never")
    # stdout and stderr come through two pipes: their interleaving is best effort
    assert sorted(failed.output.split()) == ["boom", "out"]
    assert failed.error is not None and failed.error.startswith("exit status 3")
    assert failed.error.endswith("boom")
    assert env.execute("echo $?").output == "3\n"
    warned = env.execute("echo just a warning >&2")
    assert warned.error is None and warned.output == "just a warning\n"
    assert env.execute("printf abc").output == "abc"  # no newline added


@pytest.mark.parametrize(
    "code",
    ["set -e; false; echo after-e", "set -u; echo $nope", "if then", 'echo "${q:?unset}"'],
    ids=["set-e", "set-u", "syntax", "unset-check"],
)
def test_mistakes_never_end_the_shell(make_default: Make, code: str) -> None:
    env = make_default()
    env.execute("x=41")
    result = env.execute(code)
    assert not result.restarted
    assert env.execute("set +u; echo $((x + 1))").output == "42\n"


def _times_out(env: BashEnvironment, code: str) -> None:
    env.execute("x=41; sleep 1000 &")  # a background job: stopped at the timeout too
    started = time.perf_counter()
    result = env.execute(code)
    assert result.timed_out and not result.restarted
    assert result.error is not None and "TimeoutError" in result.error
    assert "not-here" not in result.output
    assert time.perf_counter() - started < 2.0
    assert env._shell is not None and not env._shell.block_pids()
    assert env.execute("echo $((x + 1))").output == "42\n"


@pytest.mark.parametrize(
    "code",
    ["while true; do :; done", "sleep 100; echo not-here", "yes > /dev/null"],
    ids=["builtin-loop", "sleep", "yes"],
)
def test_timeout_stops_the_block_and_its_processes(make: Make, code: str) -> None:
    _times_out(make(exec_timeout_s=0.5), code)


@pytest.mark.parametrize(
    "code",
    [
        "f() { while :; do :; done; }; f; echo not-here",
        "y=$(sleep 100); echo not-here",
        "python3 -c 'import time; time.sleep(100)'",
        "sleep 100 | cat; echo not-here",
    ],
    ids=["loop-in-function", "subshell", "python", "pipeline"],
)
def test_timeout_stops_more_kinds_of_blocks(make_default: Make, code: str) -> None:
    _times_out(make_default(exec_timeout_s=0.5), code)


def test_a_child_that_ignores_sigint_is_killed(make_default: Make) -> None:
    env = make_default(exec_timeout_s=0.5)
    result = env.execute("bash -c \"trap '' INT; sleep 100\"; echo ran > after.txt")
    assert result.timed_out and not result.restarted
    assert env._shell is not None and not env._shell.block_pids()
    assert not (env.dirs.work / "after.txt").exists()  # the rest of the block did not run


def test_a_shell_that_ignores_sigint_is_restarted(make: Make) -> None:
    env = make(exec_timeout_s=0.5, interrupt_grace_s=0.5)
    env.execute("x=41; echo kept > file.txt")
    result = env.execute("trap '' INT; while :; do :; done")
    assert result.timed_out and result.restarted
    assert result.error is not None and "variables and functions are lost" in result.error
    after = env.execute('echo "[$x]"; cat file.txt; wc -m < "$CONTEXT"')
    assert after.output.split() == ["[]", "kept", "0"]


def test_a_shell_that_exits_is_restarted(make: Make) -> None:
    env = make("ctx")
    env.execute("x=41")
    result = env.execute("echo bye; builtin exit 7")
    assert result.restarted and not result.timed_out and result.output == "bye\n"
    assert result.error is not None and "ShellDied" in result.error and "status 7" in result.error
    assert env.execute('echo "[$x] $(cat "$CONTEXT")"').output == "[] ctx\n"


@pytest.mark.parametrize("code", ["yes", "cat /dev/urandom"], ids=["yes", "urandom"])
def test_endless_output_is_capped_and_the_run_goes_on(make_default: Make, code: str) -> None:
    env = make_default(exec_timeout_s=0.5, capture_limit_chars=10_000)
    result = env.execute(code)
    assert result.timed_out and not result.restarted
    assert len(result.output) <= 10_000 and result.truncated_chars > 100_000
    assert env.execute("echo hello").output == "hello\n"


def test_capped_output_counts_every_dropped_character(make_default: Make) -> None:
    env = make_default(capture_limit_chars=10_000)
    result = env.execute("yes é | head -c 3000000")  # "é\n": 3 bytes, 2 characters
    assert result.output == "é\n" * 5_000
    assert result.truncated_chars == 1_000_000 * 2 - 10_000


def test_background_output_comes_with_the_next_block(make_default: Make) -> None:
    env = make_default()
    env.execute("(sleep 0.2; echo late) &")
    time.sleep(0.6)
    assert env.execute("echo now").output.split()[-2:] == ["late", "now"]


def test_final_text_pipe_and_mistakes(make: Make) -> None:
    env = make()
    assert env.execute("final").error is not None  # nothing given: an error, no answer
    empty = env.execute("grep -c nothing /dev/null | grep x | final")
    assert empty.error is not None and "empty" in empty.error and not empty.answer_ready
    assert not env.read_state().answer_ready
    piped = env.execute("printf 'line one\\nline two\\n' | final")
    assert piped.answer_ready and piped.answer == "line one\nline two"
    words = env.execute("final the  answer is 'ü 42'")
    assert words.answer == "the answer is ü 42" and env.read_state().answer == words.answer


class _Calls(EchoSubCalls):
    def llm_batch(self, prompts: Sequence[str], model: str | None = None) -> list[str]:
        return [SubCallFailure("no") if p == "bad" else "ok:" + p for p in prompts]


def test_sub_model_commands(make: Make) -> None:
    calls = _Calls()
    env = make("the context", subcalls=calls)
    assert env.execute("llm --no-input ping").output == "re:ping\n"
    assert env.execute("echo body | llm 'head:'").output == "re:head:\n\nbody\n\n"
    assert calls.prompts == ["ping", "head:\n\nbody\n"]
    for empty in ("llm 'What is the code?'", "grep -F nowhere \"$CONTEXT\" | llm 'The code?'"):
        asked = env.execute(empty)  # nothing to read: refused, nothing sent
        assert "no text came on stdin" in asked.output + (asked.error or ""), asked
    assert calls.prompts == ["ping", "head:\n\nbody\n"]
    batch = env.execute("printf 'a\\nbad\\n\"c\"\\n' | to_json | llm_batch | from_json")
    assert batch.output.splitlines() == ["ok:a", "[sub-call failed: no]", 'ok:"c"']
    odd = env.execute("printf 'a\\rb\\u2028c\\n' | to_json | llm_batch | from_json")
    assert odd.output == "ok:a\rb\u2028c\n"  # one line in, one item: only \n ends a line
    child = env.execute('rlm "summarise" "$CONTEXT"')
    assert child.output == "re:summarise\n"
    failed = env.execute("llm --no-input fail")
    assert failed.error is not None and "asked to fail" in failed.error
    bad = env.execute("echo not-json | llm_batch")
    assert bad.error is not None and "not a JSON string" in bad.error
    missing = env.execute("rlm q no-such-file")
    assert missing.error is not None and "cannot read the context file" in missing.error


def test_close_ends_a_running_block_and_leaves_nothing(make: Make) -> None:
    env = make()
    env.execute("sleep 1000 &")
    shell = env._shell
    assert shell is not None
    pids = shell.block_pids() | {shell.shell_pid, shell.proc.pid}
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(env.execute("sleep 100")))
    runner.start()
    time.sleep(0.3)
    env.close()
    runner.join(5)
    assert not runner.is_alive()
    assert results and results[0].error is not None
    alive = [pid for pid in pids if _alive(pid)]
    assert not alive
    assert not env.dirs.root.exists()
    env.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
