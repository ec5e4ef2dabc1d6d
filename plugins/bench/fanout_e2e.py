"""Sub-call fan-out end to end: the wall time of one ``RLM.completion`` whose
scripted root writes one block that sends N prompts to the sub-model at once,
beside a bare ``asyncio.gather`` of ``litellm.acompletion`` under a semaphore
of C, measured in the same run (interleaved, median of ``--repeats``).

The context has ``--context-chars`` characters (2,000,000 by default): the N
prompt lines ``prompt 0`` ... ``prompt N-1`` first, then filler lines; the
block sends exactly the first N lines (``RLM(max_concurrency=C)``). Sub-calls
go to the fake OpenAI-compatible server in its own process, at
``--fast-latency`` (0 s) and ``--slow-latency`` (1 s) per request. The timed
region is what a user sees for one completion: the ``RLM`` constructed,
a fresh environment started, the context loaded, the root call (scripted, no
latency), the block, the environment closed, the result returned. Each
process first runs every column once small (imports, litellm's first calls).

Target (issue "pipelined turns", item 2): e2e / bare at most 1.1 at the slow
latency and at most 1.2 at the fast one, on every backend; exit 1 otherwise.
The JSON keeps, per run, where the time went (from the events' ``ts``):
construct, env start + context load, opening (system prompt), root call,
the gap to the block, the block itself (``CodeExecuted.duration_s``), close
and the rest.

Run: ``python -m polyrlm.plugins.bench.fanout_e2e`` (or ``polyrlm bench fanout-e2e``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.fanout import FAKE_MODEL, _price_fake_model, bare_gather
from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, print_table, write_json

__all__ = ["BLOCKS", "PHASES", "TARGETS", "main", "make_context", "run_e2e"]

#: Largest e2e / bare ratio allowed, by latency column.
TARGETS = {"fast": 1.2, "slow": 1.1}
ALL_BACKENDS = "python-inline,python,sql,bash,wasm"
_FILLER = "filler text that no block sends to the sub-model, lorem ipsum dolor sit amet"

#: Per language: send the first {n} lines, check the last reply, answer the count.
BLOCKS = {
    "python": (
        "out = llm_batch(context.splitlines()[:{n}])\n"
        "assert out[-1] == 'echo: prompt {last}', out[-1]\n"
        "FINAL(len(out))"
    ),
    "sql": (
        "CREATE TABLE replies AS SELECT line_no, llm(text) AS reply FROM context "
        "WHERE line_no <= {n};\n"
        "SELECT CASE WHEN max_by(reply, line_no) = 'echo: prompt {last}' THEN final(count(reply))\n"
        "ELSE error('last reply: ' || coalesce(max_by(reply, line_no), 'NULL')) END AS n\n"
        "FROM replies;"
    ),
    "bash": (
        'head -n {n} "$CONTEXT" | to_json | llm_batch > replies.jsonl\n'
        "last=$(tail -n 1 replies.jsonl)\n"
        '[ "$last" = \'"echo: prompt {last}"\' ] ||\n'
        '  {{ echo "last reply: $last" >&2; exit 1; }}\n'
        "wc -l < replies.jsonl | final"
    ),
}
#: The phases of one completion, in order (seconds each; they add up to the total).
PHASES = ("construct", "env_start", "opening", "root_call", "to_exec", "exec", "close", "rest")


def make_context(n: int, chars: int) -> str:
    """``prompt 0`` ... ``prompt n-1``, then filler lines, ``chars`` long in all
    (longer only when the n lines alone are)."""
    lines = [f"prompt {i}" for i in range(n)]
    head = size = sum(map(len, lines)) + n - 1
    while size < chars:
        lines.append(f"{len(lines) - n:07d} {_FILLER}")
        size += len(lines[-1]) + 1
    return "\n".join(lines)[: max(chars, head)]


def _phases(events: Sequence[Any], t0: float, built: float, t_end: float) -> dict[str, float]:
    from polyrlm.events import CodeExecuted, ModelCalled, RunFinished, RunStarted, TurnStarted

    def first(kind: type, **match: Any) -> Any:
        return next(
            e
            for e in events
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())
        )

    started, turn = first(RunStarted, depth=0), first(TurnStarted, iteration=1)
    root, code = first(ModelCalled, role="root"), first(CodeExecuted)
    finished = [e for e in events if isinstance(e, RunFinished)][-1]
    exec_start = code.ts - code.duration_s
    marks = [t0, built, started.ts, turn.ts, root.ts, exec_start, code.ts, finished.ts, t_end]
    return {p: b - a for p, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True)}


def run_e2e(
    backend: str, n: int, concurrency: int, api_base: str, context: str
) -> tuple[float, dict[str, float]]:
    """Wall seconds of one completion on ``backend`` (RLM construction
    included) and the phases they went to."""
    from polyrlm import RLM
    from polyrlm.registry import get_registry
    from polyrlm.testing.scripted import ScriptedModel

    cls = get_registry().get(backend)
    code = BLOCKS[cls.language].format(n=n, last=n - 1)
    root = ScriptedModel([f"Fan out.\n```{cls.fence_tags[0]}\n{code}\n```"])
    t0, started = time.time(), time.perf_counter()
    rlm = RLM(
        root.model,
        FAKE_MODEL,
        backend=backend,
        max_concurrency=concurrency,
        sub_model_options={"api_base": api_base, "api_key": "fake"},
    )
    built = time.time()
    result = rlm.completion("fan out", context)
    wall, t_end = time.perf_counter() - started, time.time()
    if str(result.answer) != str(n):
        raise RuntimeError(f"{backend}: fan-out failed: {result.error or result.answer}")
    return wall, _phases(result.trajectory, t0, built, t_end)


def _measure(
    backends: Sequence[str], n: int, c: int, latency: float, repeats: int, chars: int
) -> dict[str, dict[str, Any]]:
    from polyrlm.testing.fake_server import FakeServerProcess

    _price_fake_model()
    context = make_context(n, chars)
    small = make_context(c, 1_000)
    walls: dict[str, list[float]] = {name: [] for name in ["bare", *backends]}
    phases: dict[str, list[dict[str, float]]] = {name: [] for name in backends}
    with FakeServerProcess(latency_s=latency) as server:
        url = server.base_url
        bare_gather(c, c, url)  # warm-up: imports, clients, each backend's first start
        for name in backends:
            run_e2e(name, c, c, url, small)
        for _ in range(repeats):  # interleaved, so drift hits every column alike
            walls["bare"].append(bare_gather(n, c, url))
            for name in backends:
                wall, split = run_e2e(name, n, c, url, context)
                walls[name].append(wall)
                phases[name].append(split)
    out: dict[str, dict[str, Any]] = {
        "bare": {"s": statistics.median(walls["bare"]), "runs": walls["bare"]}
    }
    for name in backends:
        median = {p: statistics.median(run[p] for run in phases[name]) for p in PHASES}
        out[name] = {"s": statistics.median(walls[name]), "phases": median, "runs": walls[name]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from polyrlm.plugins.bench.compare import backend_status

    p = argparse.ArgumentParser(prog="polyrlm bench fanout-e2e", description=__doc__)
    p.add_argument("--backends", default=ALL_BACKENDS, help="comma-separated")
    p.add_argument("--n", type=int, default=1_000, help="prompts sent by the block")
    p.add_argument("--concurrency", type=int, default=64, help="RLM(max_concurrency=...)")
    p.add_argument("--repeats", type=int, default=3, help="runs per column (median kept)")
    p.add_argument("--context-chars", type=int, default=2_000_000)
    p.add_argument("--fast-latency", type=float, default=0.0, help="seconds per sub-call")
    p.add_argument("--slow-latency", type=float, default=1.0, help="seconds per sub-call")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "fanout_e2e.json")
    args = p.parse_args(argv)
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    skipped = {b: why for b in wanted if (why := backend_status(b)) is not None}
    backends = [b for b in wanted if b not in skipped]
    n, c = args.n, args.concurrency
    latencies = {"fast": args.fast_latency, "slow": args.slow_latency}
    rows: list[list[Any]] = []
    split_rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    ok = True
    for column, latency in latencies.items():
        got = _measure(backends, n, c, latency, args.repeats, args.context_chars)
        bare = got["bare"]["s"]
        for name in backends:
            ratio = got[name]["s"] / bare
            met = ratio <= TARGETS[column]
            ok = ok and met
            results.setdefault(name, {})[column] = {
                "latency_s": latency, "e2e_s": got[name]["s"], "bare_s": bare, "ratio": ratio,
                "target": TARGETS[column], "met": met, "runs_s": got[name]["runs"],
                "bare_runs_s": got["bare"]["runs"],
                "phases_s": got[name]["phases"],
            }  # fmt: skip
            rows.append([name, latency, got[name]["s"], bare, ratio, TARGETS[column], met])
            split_rows.append([name, latency, *(got[name]["phases"][ph] for ph in PHASES)])
    for name, why in skipped.items():
        rows.append([name, None, None, None, None, None, why])
    print_table(
        f"fan-out end to end: RLM.completion, N={n}, C={c}, context {args.context_chars:,} "
        f"chars, beside a bare gather; median of {args.repeats}",
        ["backend", "latency s", "e2e s", "bare s", "ratio", "target", "met"],
        rows,
    )
    print()
    print_table("where the e2e time went (seconds, median)", ["backend", "latency s", *PHASES],
                split_rows)  # fmt: skip
    path = write_json(
        args.out,
        {
            "benchmark": "fanout_e2e",
            "n": n,
            "concurrency": c,
            "context_chars": args.context_chars,
            "repeats": args.repeats,
            "latencies_s": latencies,
            "targets": TARGETS,
            "results": results,
            "skipped": skipped,
            "ok": ok,
        },
    )
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
