"""Scripted strategies through the real loop, on every backend installed here:
offline ones alone, sub-model ones with oracle sub-models."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import pytest

from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.methods import run_strategy, strategy_params
from polyrlm.plugins.bench.strategy import MAP_REDUCE, Strategy, literal, render
from polyrlm.plugins.bench.task import get_task
from polyrlm.registry import get_registry
from polyrlm.testing.scripted import ScriptedModel
from tests.plugins.bench.oracles import Messages, hop_reader, labeller, needle_reader

#: Fast backends (the Jupyter kernel starts in seconds: it has its own test below).
BACKENDS = [
    b
    for b in ("python-inline", "sql", "bash", "wasm")
    if b in get_registry().specs() and get_registry().specs()[b].available
]


def test_literals_per_language() -> None:
    assert literal("python", "it's") == '"it\'s"'
    assert literal("python", [1, "a"]) == "[1, 'a']"
    assert literal("sql", "it's") == "'it''s'"
    assert literal("sql", None) == "NULL"
    assert literal("sql", 3) == "3"
    assert literal("bash", "a b'c") == "'a b'\"'\"'c'"
    with pytest.raises(ConfigError):
        literal("sql", [1, 2])


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_literals_survive_the_shell() -> None:
    tricky = 'it\'s $HOME `x` "q" \\ \n tab\t!'
    out = subprocess.run(
        ["bash", "-c", f"printf %s {literal('bash', tricky)}"], capture_output=True, text=True
    )
    assert out.stdout == tricky


def test_render_fills_quoted_and_raw_placeholders() -> None:
    code = render("x = <<q>>; n = <<n:raw>>", "python", {"q": "a'b", "n": 5})
    assert code == 'x = "a\'b"; n = 5'
    with pytest.raises(ConfigError, match="needs parameter 'missing'"):
        render("<<missing>>", "python", {})
    with pytest.raises(ConfigError, match="no sql code"):
        Strategy("s", "d", {"python": ("pass",)}).blocks("sql", {})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("task_name", "strategy", "size"),
    [("sniah", "grep", 20_000), ("codeqa", "code-read", 10_000), ("multihop", "grep-chain", 8_000)],
)
def test_offline_strategies_answer(backend: str, task_name: str, strategy: str, size: int) -> None:
    task = get_task(task_name)
    for seed in range(2):
        instance = task.generate(seed, size)
        record = run_strategy(task, instance, task.strategies()[strategy], backend)
        assert record.status == "ok", record.detail
        assert record.score == 1.0, (record.answer, record.expected)
        assert record.iterations == 1 and record.sub_calls == 0 and record.root_tokens > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("task_name", "strategy", "oracle"),
    [
        ("oolong", "label-map", labeller),
        ("oolong-pairs", "label-map", labeller),
        ("multihop", "hop-read", hop_reader),
        ("sniah", "map-reduce", needle_reader),
    ],
)
def test_sub_model_strategies_answer_with_an_oracle_sub_model(
    backend: str, task_name: str, strategy: str, oracle: Callable[[Messages], str]
) -> None:
    task = get_task(task_name)
    chosen = task.strategies()[strategy]
    language = get_registry().get(backend).language
    instance = task.generate(1, 300_000 if task_name == "sniah" else 4_000)
    sub = ScriptedModel(oracle)
    record = run_strategy(task, instance, chosen, backend, sub_model=sub.model)
    if language not in chosen.code:
        assert record.status == f"no {language} code" and record.score is None
        return
    assert record.status == "ok", record.detail
    assert record.score == 1.0, (record.answer, record.expected)
    assert record.sub_calls >= 2 and record.sub_tokens > 0


def test_a_strategy_that_needs_a_sub_model_says_so_without_one() -> None:
    task = get_task("sniah")
    record = run_strategy(task, task.generate(0, 2_000), MAP_REDUCE, "python-inline")
    assert record.status == "needs --sub-model" and record.score is None


def test_the_kernel_backend_runs_the_python_strategies() -> None:
    if not get_registry().specs()["python"].available:
        pytest.skip("the python extra is not installed")
    task = get_task("sniah")
    instance = task.generate(2, 10_000)
    record = run_strategy(task, instance, task.strategies()["grep"], "python")
    assert record.status == "ok" and record.score == 1.0


def test_map_reduce_params_cover_every_language() -> None:
    instance = get_task("multihop").generate(0, 4_000)
    params = strategy_params(instance)
    assert params["order_col"] == "doc_id"  # documents: SQL orders by doc_id
    for language in MAP_REDUCE.code:
        blocks = MAP_REDUCE.blocks(language, params)
        assert len(blocks) == 2 and "<<" not in "".join(blocks)
