"""``polyrlm bench batch``: what :meth:`RLM.batch` gains over running the
runs one after another, in one run, offline.

N needle runs (each its own context of ``--context-chars`` characters with
one secret code hidden at a random line; a scripted root over HTTP whose code
searches the context for the code and answers it, one root call per run; the
fake OpenAI-compatible server, in this process, waits ``--latency`` seconds
per call) on each executor:

* ``serial``: one after another, in this process (warmed up first);
* ``local``: the process pool (``--workers`` processes, spawned by the batch:
  their start-up is in the time);
* ``ray``: a local Ray instance (started here with ``num_cpus`` =
  ``--workers``, its start-up shown apart), first batch (its worker processes
  start) and ``ray warm`` (the same instance again: workers already up).

Every answer is checked. ``ideal`` is ceil(N / workers) x latency. Prints a
table and writes ``bench-results/batch.json``; exits 1 when a run did not
answer its code. Run: ``polyrlm bench batch`` (or ``python -m
polyrlm.plugins.bench.batch_speed``).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, print_table, write_json

__all__ = ["BATCH_WORKERS", "EXECUTORS", "NEEDLE_CODE", "main", "needle_contexts", "respond"]

#: Runs in the batch.
BATCH_RUNS = 40
#: Seconds the fake server waits before each answer.
BATCH_LATENCY_S = 1.0
#: Jobs at once on the local and Ray executors (runs wait on the model: more than cores).
BATCH_WORKERS = 8
#: Characters of each run's context.
CONTEXT_CHARS = 100_000
#: The executors compared, in this order (``ray`` gives a cold and a warm column).
EXECUTORS = ("serial", "local", "ray")
#: Characters of one filler line.
LINE_CHARS = 60

#: The root's one turn per language: find the secret code in the context, answer it.
NEEDLE_CODE = {
    "python": (
        "```python\nimport re\n"
        "found = re.search(r'The secret code is ([A-Z0-9-]+)', context)\n"
        "FINAL(found.group(1) if found else 'not found')\n```"
    ),
    "sql": (
        "```sql\nSELECT final(coalesce(max(regexp_extract(text, "
        "'The secret code is ([A-Z0-9-]+)', 1)), 'not found'))\n"
        "FROM context WHERE text LIKE '%The secret code is %';\n```"
    ),
    "bash": (
        "```bash\ngrep -o 'The secret code is [A-Z0-9-]*' \"$CONTEXT\" | head -n 1 "
        "| sed 's/The secret code is //' | final\n```"
    ),
}


def respond(body: dict[str, Any]) -> str:
    """The scripted root: the fake server is asked for model ``LANGUAGE``."""
    return NEEDLE_CODE[str(body["model"])]


def needle_contexts(n: int, chars: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` contexts of about ``chars`` characters, each with one secret code
    at a random line, and the codes."""
    rng = random.Random(seed)
    contexts, codes = [], []
    lines_per = max(2, chars // LINE_CHARS)
    for i in range(n):
        code = f"NEEDLE-{i:03d}-{rng.randrange(16**6):06X}"
        lines = [
            f"{j:06d} "
            + " ".join(rng.choice(("lorem", "ipsum", "dolor", "amet")) for _ in range(9))
            for j in range(lines_per)
        ]
        lines.insert(rng.randrange(lines_per), f"The secret code is {code}.")
        contexts.append("\n".join(lines))
        codes.append(code)
    return contexts, codes


def _column(name: str, out: Any, codes: Sequence[str], workers: int) -> dict[str, Any]:
    wrong = [i for i, (a, c) in enumerate(zip(out.answers, codes, strict=True)) if a != c]
    first = out.results[wrong[0]] if wrong else None
    return {
        "executor": name,
        "workers": workers,
        "wall_s": out.elapsed_s,
        "model_calls": out.usage.calls,
        "wrong": len(wrong),
        "first_error": None if first is None else (first.error or repr(first.answer))[:200],
    }


def measure(
    backend: str, language: str, args: argparse.Namespace, base_url: str
) -> list[dict[str, Any]]:
    """The columns for ``backend``, one per executor asked for (``ray``: two,
    cold and warm; Ray must be initialised by the caller)."""
    from polyrlm import RLM

    contexts, codes = needle_contexts(args.n, args.context_chars, args.seed)
    questions = ["What is the secret code?"] * args.n
    rlm = RLM(f"openai/{language}", api_base=base_url, api_key="fake", backend=backend)
    columns = []
    for name in args.executors:
        workers = 1 if name == "serial" else args.workers
        for label in (name, "ray warm") if name == "ray" else (name,):
            out = rlm.batch(questions, contexts, executor=name, max_workers=workers)
            columns.append(_column(label, out, codes, workers))
    return columns


def _rows(backend: str, columns: Sequence[dict[str, Any]], n: int) -> list[list[Any]]:
    walls = {c["executor"]: c["wall_s"] for c in columns}
    rows = []
    for col in columns:
        wall = col["wall_s"]
        ratios = [walls[base] / wall if base in walls else "-" for base in ("serial", "local")]
        answered = f"{n - col['wrong']}/{n}"
        rows.append([backend, col["executor"], col["workers"], wall, *ratios, answered])
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="polyrlm bench batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backends", default="python-inline", help="comma-separated")
    p.add_argument("--executors", default=",".join(EXECUTORS), help="comma-separated")
    p.add_argument("--n", type=int, default=BATCH_RUNS, help="runs per batch")
    p.add_argument("--latency", type=float, default=BATCH_LATENCY_S, help="seconds per call")
    p.add_argument("--workers", type=int, default=BATCH_WORKERS, help="local and ray")
    p.add_argument("--context-chars", type=int, default=CONTEXT_CHARS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "batch.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = _parser().parse_args(argv)
    from polyrlm import RLM
    from polyrlm.errors import ConfigError
    from polyrlm.registry import get_registry
    from polyrlm.testing.fake_server import FakeOpenAIServer

    if args.n < 1 or args.workers < 1 or args.latency < 0:
        raise ConfigError("--n and --workers must be at least 1, --latency at least 0")
    args.executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    bad = sorted(set(args.executors) - set(EXECUTORS))
    if bad or not args.executors:
        raise ConfigError(
            f"--executors takes {', '.join(EXECUTORS)}; not {', '.join(bad) or 'none'}"
        )
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    languages = {b: get_registry().get(b).language for b in backends}
    if unknown := sorted(b for b, lang in languages.items() if lang not in NEEDLE_CODE):
        raise ConfigError(f"no needle code for {', '.join(unknown)} (python, sql, bash have)")
    ideal = math.ceil(args.n / args.workers) * args.latency
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    ray_start_s, owner = None, None
    with FakeOpenAIServer(respond) as server:
        for backend, language in languages.items():  # warm-up here: imports, first call
            warm = RLM(
                f"openai/{language}", api_base=server.base_url, api_key="fake", backend=backend
            )
            warm.batch(["warm up"], needle_contexts(1, 1_000)[0], executor="serial")
        server.latency_s = args.latency
        if "ray" in args.executors:  # started here (or the one already running)
            started = time.perf_counter()
            owner = get_registry().executor("ray")(args.workers)
            ray_start_s = time.perf_counter() - started
        try:
            for backend, language in languages.items():
                results[backend] = measure(backend, language, args, server.base_url)
                rows += _rows(backend, results[backend], args.n)
        finally:
            if owner is not None:
                owner.close()
    started_note = (
        "" if ray_start_s is None else f"; Ray start {ray_start_s:.1f} s, not in the rows"
    )
    print_table(
        f"RLM.batch: {args.n} needle runs, {args.context_chars:,}-character contexts, "
        f"fake server at {args.latency:g} s per call, {args.workers} workers "
        f"(ideal {ideal:g} s){started_note}",
        ["backend", "executor", "workers", "wall s", "vs serial", "vs local", "answered"],
        rows,
    )
    path = write_json(
        args.out,
        {
            "benchmark": "batch",
            "n": args.n,
            "latency_s": args.latency,
            "workers": args.workers,
            "context_chars": args.context_chars,
            "ideal_s": ideal,
            "ray_start_s": ray_start_s,
            "ray_started_here": owner is not None and owner.owns_instance,
            "results": results,
        },
    )
    print(f"wrote {path}")
    wrong = sum(c["wrong"] for cols in results.values() for c in cols)
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
