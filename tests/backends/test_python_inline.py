"""python-inline specifics: per-run capture, contexts, answers."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from polyrlm.backends.python.inline import InlinePythonEnvironment
from polyrlm.errors import ConfigError
from polyrlm.testing.contract import EchoSubCalls


def make(context: object = "") -> InlinePythonEnvironment:
    env = InlinePythonEnvironment(EchoSubCalls())
    env.load_context(context)
    return env


def test_concurrent_executions_do_not_mix_output() -> None:
    envs = [make() for _ in range(4)]
    results: dict[int, str] = {}
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        barrier.wait()
        code = f"for _ in range(2000):\n    print('env{i}')"
        results[i] = envs[i].execute(code).output

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert set(results[i].split()) == {f"env{i}"} and len(results[i].split()) == 2000


def test_last_expression_is_shown_and_syntax_errors_reported() -> None:
    env = make()
    assert env.execute("1 + 1").output.strip() == "2"
    result = env.execute("def broken(:\n  pass")
    assert result.error and "SyntaxError" in result.error
    tb = env.execute("def f():\n    raise KeyError('k')\nf()").error
    assert tb and "KeyError" in tb and "line 2" in tb and "inline.py" not in tb


def test_tracebacks_are_the_same_in_every_environment() -> None:
    """Cells are numbered per environment, polyrlm's own frames are left out,
    and each cell's source line is its own: a replay shows the same text."""
    errors = []
    for other in ("x = 1", "y = 2\nz = 3"):
        env = make()
        env.execute(other)
        env.execute("def f():\n    return llm_query(None) + 1")
        errors.append(env.execute("f()").error)
        env.close()
    assert errors[0] == errors[1]
    assert errors[0] is not None and '"<cell-3>", line 1' in errors[0]
    assert '"<cell-2>", line 2, in f' in errors[0] and "return llm_query(None) + 1" in errors[0]
    assert "polyrlm" not in errors[0].replace("polyrlm.", "") and "futures" not in errors[0]


def test_named_contexts_become_variables(tmp_path: Path) -> None:
    env = make({"alpha": "aaa", "beta": ["b1", "b2"], "not an id": "x"})
    assert env.execute("print(alpha, len(beta), sorted(context))").output.strip() == (
        "aaa 2 ['alpha', 'beta', 'not an id']"
    )


def test_path_contexts(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello file")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "1.txt").write_text("one")
    (docs / "2.txt").write_text("two")
    (tmp_path / "t.csv").write_text("x,y\n1,2\n3,4\n")
    assert make(tmp_path / "a.txt").execute("print(context)").output.strip() == "hello file"
    assert make(docs).execute("print(context)").output.strip() == "['one', 'two']"
    out = make(tmp_path / "t.csv").execute("print(type(context).__name__, context['y'].sum())")
    assert out.output.strip() == "DataFrame 6"


def test_unreadable_context_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read context"):
        make(tmp_path / "missing.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json"):
        make(tmp_path / "bad.json")


def test_answer_is_plain_data_and_reassigned_answer_is_not_ready() -> None:
    env = make()
    result = env.execute("import decimal\nFINAL({'n': decimal.Decimal('1.5'), 'l': (1, 2)})")
    assert result.answer == {"n": "1.5", "l": [1, 2]}
    env2 = make()
    assert not env2.execute("answer = 'oops'").answer_ready


def test_sub_call_failure_is_a_string_and_llm_query_raises() -> None:
    env = make()
    out = env.execute(
        "try:\n    llm_query('fail')\nexcept SubCallError as e:\n    print('caught', e)"
    )
    assert out.output.strip() == "caught asked to fail"
