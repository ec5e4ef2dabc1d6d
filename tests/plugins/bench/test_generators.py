"""Every generator: deterministic for a seed, sized as asked."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.task import Instance, get_task, get_tasks

#: A small size per task (tokens), to keep the tests fast.
SMALL = {
    "sniah": 4_000,
    "oolong": 4_000,
    "oolong-pairs": 4_000,
    "codeqa": 8_000,
    "multihop": 4_000,
    "hotpotqa": 8_000,
    "ruler-niah-single": 4_000,
    "ruler-niah-multikey": 4_000,
    "ruler-vt": 4_000,
}
#: Tasks over real tables (their contexts are files in the bench cache; their
#: determinism and sizes are tested in test_analyst.py).
TABLES = {"nycflights", "lahman", "tpch"}
#: How far a context may be from the requested size.
TOLERANCE = 0.03


def digest(instance: Instance) -> str:
    return hashlib.sha256(instance.model_dump_json().encode()).hexdigest()


def test_every_builtin_task_is_registered_through_the_hook() -> None:
    assert set(get_tasks()) == set(SMALL) | TABLES


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_gives_the_same_bytes_and_another_seed_differs(name: str) -> None:
    task = get_task(name)
    first, again = task.generate(3, SMALL[name]), task.generate(3, SMALL[name])
    assert digest(first) == digest(again)
    other = task.generate(4, SMALL[name])
    assert other.context != first.context
    assert other.question != first.question or other.expected != first.expected


def test_instances_do_not_depend_on_the_process_or_its_hash_seed() -> None:
    code = (
        "import hashlib; from polyrlm.plugins.bench.task import get_task\n"
        f"sizes = {SMALL!r}\n"
        "for name in sorted(sizes):\n"
        "    i = get_task(name).generate(5, sizes[name])\n"
        "    print(name, hashlib.sha256(i.model_dump_json().encode()).hexdigest())\n"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    here = "".join(
        f"{name} {digest(get_task(name).generate(5, SMALL[name]))}\n" for name in sorted(SMALL)
    )
    assert here == outputs[0]


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("sniah", 1_000),
        ("sniah", 8_192),
        ("sniah", 1_000_000),
        ("oolong", 32_768),
        ("oolong-pairs", 32_768),
        ("codeqa", 8_000),
        ("codeqa", 100_000),
        ("multihop", 2_000),
        ("multihop", 100_000),
    ],
)
def test_sizes_are_respected(name: str, size: int) -> None:
    instance = get_task(name).generate(0, size)
    assert instance.size == size
    assert abs(instance.tokens - size) <= size * TOLERANCE, instance.tokens


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_size_out_of_range_is_a_clear_error(name: str) -> None:
    task = get_task(name)
    with pytest.raises(ConfigError, match="out of range"):
        task.generate(0, task.max_size + 1)
    with pytest.raises(ConfigError, match="out of range"):
        task.generate(0, task.min_size - 1)


def test_sniah_has_one_needle_on_one_line_and_its_question_asks_for_it() -> None:
    for seed in range(6):
        instance = get_task("sniah").generate(seed, 20_000)
        context = instance.context
        assert isinstance(context, str)
        needle = instance.meta["needle"]
        assert context.count("special magic") == 1
        line = next(line for line in context.splitlines() if "special magic" in line)
        assert needle.rstrip(".") in line
        assert instance.params["key"] in instance.question
        assert str(instance.expected) in needle
        assert instance.params["kind"] in instance.question
    kinds = {get_task("sniah").generate(s, 2_000).params["kind"] for s in range(20)}
    assert kinds == {"number", "phrase"}
