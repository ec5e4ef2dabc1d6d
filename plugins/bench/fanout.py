"""Sub-call fan-out: ``llm_batch`` of N prompts from inside an environment,
against the fake OpenAI-compatible server (in its own process), side by side
with a bare ``asyncio.gather`` of ``litellm.acompletion`` calls under the same
concurrency limit, in one run.

Two ratios per backend:

* overhead ratio, at ``--fast-latency`` (0 s by default): backend time / bare
  gather time. litellm's own CPU cost per call is the floor both share.
* ceiling ratio, at ``--slow-latency`` (1 s): backend time / the ideal
  ceil(N / C) x latency.

Run: ``python -m polyrlm.plugins.bench.fanout`` (or ``polyrlm bench fanout``).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, print_table, write_json

__all__ = ["bare_gather", "main", "run_backend"]

#: Model name the fake server answers (litellm's OpenAI-compatible route).
FAKE_MODEL = "openai/fake"


async def _bare(n: int, concurrency: int, api_base: str) -> float:
    import litellm

    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with sem:
            r = await litellm.acompletion(
                model=FAKE_MODEL,
                messages=[{"role": "user", "content": f"prompt {i}"}],
                api_base=api_base,
                api_key="fake",
                max_retries=0,
            )
            return str(r.choices[0].message.content)

    started = time.perf_counter()
    out = await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - started
    assert out[-1] == f"echo: prompt {n - 1}", out[-1]
    return elapsed


def bare_gather(n: int, concurrency: int, api_base: str) -> float:
    """Seconds for the baseline: litellm calls gathered under a semaphore."""
    return asyncio.run(_bare(n, concurrency, api_base))


#: Per language: one block that sends every line of the context (``prompt 0``
#: ... ``prompt N-1``) to the sub-model at once and sets the answer to the
#: number of replies, checking the last one (the fake server echoes).
FANOUT_CODE = {
    "python": (
        "```python\n"
        "out = llm_batch(context.splitlines())\n"
        "assert out[-1] == 'echo: prompt {last}', out[-1]\n"
        "FINAL(len(out))\n```"
    ),
    "sql": (
        "```sql\n"
        "CREATE TABLE replies AS SELECT line_no, llm(text) AS reply FROM context LIMIT {n};\n"
        "SELECT CASE WHEN max_by(reply, line_no) = 'echo: prompt {last}' THEN final(count(reply))\n"
        "ELSE error('last reply: ' || coalesce(max_by(reply, line_no), 'NULL')) END AS n\n"
        "FROM replies;\n```"
    ),
    "bash": (
        "```bash\n"
        'to_json < "$CONTEXT" | llm_batch > replies.jsonl\n'
        "last=$(tail -n 1 replies.jsonl)\n"
        '[ "$last" = \'"echo: prompt {last}"\' ] ||\n'
        '  {{ echo "last reply: $last" >&2; exit 1; }}\n'
        "wc -l < replies.jsonl | final\n```"
    ),
}


def run_backend(backend: str, n: int, concurrency: int, api_base: str) -> float:
    """Seconds the fan-out execution took inside ``backend``."""
    from polyrlm import RLM
    from polyrlm.events import CodeExecuted
    from polyrlm.registry import get_registry
    from polyrlm.testing.scripted import ScriptedModel

    language = get_registry().get(backend).language
    root = ScriptedModel([FANOUT_CODE[language].format(n=n, last=n - 1)])
    rlm = RLM(
        root.model,
        FAKE_MODEL,
        backend=backend,
        max_concurrency=concurrency,
        sub_model_options={"api_base": api_base, "api_key": "fake"},
    )
    context = "\n".join(f"prompt {i}" for i in range(n))
    result = rlm.completion("fan out", context)
    if str(result.answer) != str(n):
        raise RuntimeError(f"{backend}: fan-out failed: {result.error or result.answer}")
    return next(e.duration_s for e in result.trajectory if isinstance(e, CodeExecuted))


def _price_fake_model() -> None:
    """Give the fake model a price, as real models have: litellm then prices
    each call the way it does for a hosted model (an unmapped model instead
    sends litellm down a slower search on every call)."""
    import litellm

    name = FAKE_MODEL.split("/", 1)[1]
    if name not in litellm.model_cost:
        litellm.register_model(
            {
                name: {
                    "input_cost_per_token": 1e-7,
                    "output_cost_per_token": 2e-7,
                    "cache_creation_input_token_cost": 0.0,
                    "cache_read_input_token_cost": 0.0,
                    "litellm_provider": "openai",
                    "mode": "chat",
                    "max_input_tokens": 128_000,
                }
            }
        )


def _measure(
    backends: Sequence[str], n: int, concurrency: int, latency: float, repeats: int
) -> dict[str, float]:
    from polyrlm.testing.fake_server import FakeServerProcess

    _price_fake_model()
    times: dict[str, list[float]] = {name: [] for name in ["bare", *backends]}
    with FakeServerProcess(latency_s=latency) as server:
        bare_gather(concurrency, concurrency, server.base_url)  # warm-up: imports, clients
        for name in backends:
            run_backend(name, concurrency, concurrency, server.base_url)
        for _ in range(repeats):  # interleaved, so drift hits every column alike
            times["bare"].append(bare_gather(n, concurrency, server.base_url))
            for name in backends:
                times[name].append(run_backend(name, n, concurrency, server.base_url))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    p = argparse.ArgumentParser(prog="polyrlm bench fanout", description=__doc__)
    p.add_argument("--backends", default="python-inline", help="comma-separated")
    p.add_argument("--n", type=int, default=1_000, help="prompts per batch")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--fast-latency", type=float, default=0.0, help="seconds per request")
    p.add_argument("--slow-latency", type=float, default=1.0, help="seconds per request")
    p.add_argument("--repeats", type=int, default=3, help="runs per column (median kept)")
    p.add_argument("--slow-repeats", type=int, default=1, help="runs per column at slow latency")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "fanout.json")
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    n, c = args.n, args.concurrency

    fast = _measure(backends, n, c, args.fast_latency, args.repeats)
    slow = _measure(backends, n, c, args.slow_latency, args.slow_repeats)
    ideal = math.ceil(n / c) * args.slow_latency
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for name in ["bare", *backends]:
        overhead = fast[name] / fast["bare"]
        ceiling = slow[name] / ideal
        results[name] = {
            "fast_s": fast[name],
            "slow_s": slow[name],
            "overhead_ratio": overhead,
            "ceiling_ratio": ceiling,
        }
        rows.append([name, fast[name], overhead, slow[name], ceiling])
    print_table(
        f"llm_batch fan-out: N={n}, C={c}; fast latency {args.fast_latency:g} s, "
        f"slow latency {args.slow_latency:g} s (ideal {ideal:g} s)",
        ["column", "fast s", "vs bare", "slow s", "vs ideal"],
        rows,
    )
    path = write_json(
        args.out,
        {
            "benchmark": "fanout",
            "n": n,
            "concurrency": c,
            "fast_latency_s": args.fast_latency,
            "slow_latency_s": args.slow_latency,
            "ideal_s": ideal,
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
