"""The rlm and base methods, offline: a scripted root, the fake server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.plugins.bench.methods import BASE_RESERVE_TOKENS, run_base, run_rlm
from polyrlm.plugins.bench.task import Instance, get_task
from polyrlm.records import Budget
from polyrlm.testing.fake_server import FakeOpenAIServer
from polyrlm.testing.scripted import ScriptedModel

FIND = """\
```python
import re
m = re.search(r"special magic \\w+ for [a-z-]+ is: ([0-9]+|[a-z]+ [a-z]+ [a-z]+)", context)
FINAL(m.group(1))
```"""


def test_rlm_method_runs_the_real_loop_with_the_given_root() -> None:
    task = get_task("sniah")
    instance = task.generate(0, 20_000)
    root = ScriptedModel([FIND])
    record = run_rlm(
        task, instance, "python-inline", model=root.model, budget=Budget(max_iterations=3)
    )
    assert record.method == "rlm" and record.status == "ok" and record.score == 1.0
    assert record.iterations == 1 and record.root_tokens > 0 and record.sub_calls == 0
    question = root.calls[0][-1]["content"]
    assert instance.question in question and "Reply with the" in question  # answer format
    assert instance.meta["needle"] not in str(root.calls[0])  # the context stays out


def test_rlm_method_records_a_run_without_an_answer() -> None:
    task = get_task("sniah")
    root = ScriptedModel(["no code"] * 3)
    record = run_rlm(
        task, task.generate(0, 2_000), "python-inline", model=root.model,
        budget=Budget(max_iterations=1),
    )  # fmt: skip
    assert record.status == "no answer" and record.score == 0.0
    assert record.stop_reason == "max_iterations"


def needle_or_unknown(body: dict[str, Any]) -> str:
    text = body["messages"][-1]["content"]
    hit = re.search(r"special magic \w+ for [a-z-]+ is: ([0-9]+|[a-z]+ [a-z]+ [a-z]+)", text)
    return hit.group(1) if hit else "unknown"


def needle_late(seed_range: range, size: int) -> Instance:
    """An instance whose needle sits in the second half of its haystack."""
    for seed in seed_range:
        instance = get_task("sniah").generate(seed, size)
        if instance.meta["depth"] > 0.6:
            return instance
    raise AssertionError("no late needle")


def test_base_method_puts_the_context_in_the_prompt_through_a_real_server() -> None:
    task = get_task("sniah")
    instance = needle_late(range(50), 10_000)
    with FakeOpenAIServer(needle_or_unknown) as server:
        record = run_base(
            task, instance, model="openai/fake",
            options={"api_base": server.base_url, "api_key": "x"}, window=20_000,
        )  # fmt: skip
        served = server.calls
    assert record.status == "ok" and record.score == 1.0 and record.note == ""
    assert record.backend == "-"
    assert record.root_tokens == served[0].prompt_tokens + served[0].completion_tokens
    prompt = served[0].messages[-1]["content"]
    assert prompt.startswith(str(instance.context)[:1000])
    assert prompt.endswith(task.base_instruction(instance))


def test_base_method_cuts_the_context_to_the_window() -> None:
    task = get_task("sniah")
    instance = needle_late(range(50), 10_000)
    window = BASE_RESERVE_TOKENS + 3_000  # room for about 12,000 characters of 40,000
    with FakeOpenAIServer(needle_or_unknown) as server:
        record = run_base(
            task, instance, model="openai/fake",
            options={"api_base": server.base_url, "api_key": "x"}, window=window,
        )  # fmt: skip
        prompt = server.calls[-1].messages[-1]["content"]
    assert record.status == "ok" and record.score == 0.0  # the needle was cut off
    assert record.note.startswith("context cut to its first")
    assert len(prompt) <= (window - BASE_RESERVE_TOKENS) * CHARS_PER_TOKEN
    assert prompt.startswith(str(instance.context)[:1000])


def test_base_method_shrinks_until_the_guard_lets_the_prompt_through() -> None:
    task = get_task("sniah")
    dense = get_task("sniah").generate(0, 2_000)
    # " 7" is a token per two characters: the chars/4 estimate is too generous
    instance = dense.model_copy(update={"context": " 7" * 20_000})
    window = BASE_RESERVE_TOKENS + 2_000
    with FakeOpenAIServer(needle_or_unknown) as server:
        record = run_base(
            task, instance, model="openai/fake",
            options={"api_base": server.base_url, "api_key": "x"}, window=window,
        )  # fmt: skip
        served = server.calls
    assert record.status == "ok" and len(served) == 1  # refused prompts were never sent
    kept = served[0].messages[-1]["content"]
    assert len(kept) < (window - BASE_RESERVE_TOKENS) * CHARS_PER_TOKEN * 0.8


def test_rlm_method_on_an_executor_runs_every_instance_at_once(tmp_path: Path) -> None:
    """``polyrlm bench TASK --method rlm --executor local``: one RLM.batch per
    backend, in worker processes (the root scripted over HTTP reaches them)."""
    from polyrlm.errors import ConfigError
    from polyrlm.plugins.bench.compare import compare

    with FakeOpenAIServer(lambda body: FIND) as server:
        records = compare(
            "sniah",
            backends=["python-inline"],
            sizes=[4_000],
            method="rlm",
            instances=3,
            model="openai/root",
            options={"api_base": server.base_url, "api_key": "x"},
            executor="local",
            max_workers=2,
            log_dir=tmp_path,
        )
    assert [(r.seed, r.status, r.score) for r in records] == [
        (0, "ok", 1.0),
        (1, "ok", 1.0),
        (2, "ok", 1.0),
    ]
    assert all(r.run_id and r.trajectory and Path(r.trajectory).exists() for r in records)
    assert all(r.wall_s > 0 for r in records)
    with pytest.raises(ConfigError, match="--executor runs the rlm method"):
        compare("sniah", backends=["python-inline"], sizes=[4_000], executor="local")
