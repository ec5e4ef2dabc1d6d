"""``polyrlm bench perf``: what polyrlm itself costs, per backend, in one run,
offline (sub-calls go to the fake OpenAI-compatible server, the root is a
scripted model), so it measures polyrlm and not a provider:

1. sub-call fan-out: ``llm_batch`` of N prompts at concurrency C from inside
   each backend, beside a bare ``asyncio.gather`` of litellm calls
   (:mod:`polyrlm.plugins.bench.fanout`): ``vs bare`` at zero latency, ``vs ideal``
   (ceil(N/C) x latency) at a slow latency;
2. per-exec overhead of a trivial statement, beside a bare ``exec``
   (:mod:`polyrlm.plugins.bench.exec_overhead`);
3. context load time and peak memory at 1M, 10M and 100M characters, one
   fresh process per backend (:mod:`polyrlm.plugins.bench.load_probe`);
4. root prompt size against context size: the system prompt the scripted
   root receives, which must stay flat.

Writes ``bench-results/perf.json``. ``--quick`` shrinks every part (tests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, print_table, write_json

__all__ = [
    "FULL",
    "LOAD_SIZES",
    "PROBE_TIMEOUT_S",
    "PROMPT_FLAT_TOLERANCE",
    "PROMPT_SMALL_CHARS",
    "QUICK",
    "PerfSettings",
    "main",
    "probe_backend",
]

#: Context sizes (characters) of the load and memory measurement.
LOAD_SIZES = (1_000_000, 10_000_000, 100_000_000)
#: A small context, measured too, so the root prompt is seen from 1K characters up.
PROMPT_SMALL_CHARS = 1_000
#: Largest relative growth of the root's system prompt, smallest to largest context.
PROMPT_FLAT_TOLERANCE = 0.01
#: Seconds one backend's load probe (a subprocess, every size) may take.
PROBE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class PerfSettings:
    """How much each part measures."""

    #: Prompts per fan-out batch, and how many are in flight at once.
    n: int
    concurrency: int
    #: Seconds per fake-server request in the "vs ideal" fan-out.
    slow_latency: float
    #: Runs per column at zero latency (the median is kept); one at the slow latency.
    fast_repeats: int
    #: Executions of the trivial statement per backend.
    exec_repeats: int
    #: Context sizes (characters) of the load and memory measurement.
    sizes: tuple[int, ...]


#: The full run (about 3 minutes here, five backends) and ``--quick`` (tests).
FULL = PerfSettings(
    n=500, concurrency=64, slow_latency=1.0, fast_repeats=3, exec_repeats=200, sizes=LOAD_SIZES
)
QUICK = PerfSettings(
    n=64,
    concurrency=16,
    slow_latency=0.2,
    fast_repeats=1,
    exec_repeats=20,
    sizes=(100_000, 1_000_000),
)


def probe_backend(backend: str, sizes: Sequence[int], timeout_s: float) -> list[dict[str, Any]]:
    """Run the load probe for ``backend`` in a fresh process; its records."""
    cmd = [sys.executable, "-m", "polyrlm.plugins.bench.load_probe", "--backend", backend]
    cmd += ["--chars", ",".join(str(s) for s in sizes)]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"load probe timed out after {timeout_s:g} s") from None
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?")
    records: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return records


def _fanout(
    backends: list[str], languages: dict[str, str], cfg: PerfSettings
) -> tuple[list[list[Any]], dict[str, Any]]:
    from polyrlm.plugins.bench import fanout
    from polyrlm.testing.fake_server import FakeServerProcess

    n, c, slow = cfg.n, cfg.concurrency, cfg.slow_latency
    results: dict[str, Any] = {}
    ok = []
    with FakeServerProcess() as server:  # each backend once, small: who can fan out here?
        for name in backends:
            if languages[name] not in fanout.FANOUT_CODE:
                results[name] = {"error": f"no fan-out code for {languages[name]}"}
                continue
            try:
                fanout.run_backend(name, 8, 8, server.base_url)
                ok.append(name)
            except Exception as exc:
                results[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    fast = fanout._measure(ok, n, c, 0.0, cfg.fast_repeats)
    slowest = fanout._measure(ok, n, c, slow, 1)
    ideal = math.ceil(n / c) * slow
    rows: list[list[Any]] = []
    for name in ["bare", *ok]:
        results[name] = {
            "fast_s": fast[name],
            "slow_s": slowest[name],
            "vs_bare": fast[name] / fast["bare"],
            "vs_ideal": slowest[name] / ideal,
        }
        rows.append(
            [name, fast[name], fast[name] / fast["bare"], slowest[name], slowest[name] / ideal]
        )
    rows += [[name, "-", "-", "-", results[name]["error"]] for name in backends if name not in ok]
    results["settings"] = {"n": n, "concurrency": c, "slow_latency_s": slow, "ideal_s": ideal}
    return rows, results


def _exec(backends: list[str], repeats: int) -> tuple[list[list[Any]], dict[str, Any]]:
    from polyrlm.plugins.bench.exec_overhead import _bare, measure_backend

    bare = statistics.median(_bare(repeats))
    results: dict[str, Any] = {"bare exec": {"median_us": bare * 1e6}}
    rows: list[list[Any]] = [["bare exec", bare * 1e6, 1.0, "-", "-"]]
    inline = None
    for name in backends:
        try:
            times, startup = measure_backend(name, repeats)
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            rows.append([name, "-", "-", "-", results[name]["error"]])
            continue
        median = statistics.median(times)
        inline = median if name == "python-inline" else inline
        results[name] = {"median_us": median * 1e6, "vs_bare": median / bare, "startup_s": startup}
        rows.append([name, median * 1e6, median / bare, "", f"{startup:.2f}"])
    for row in rows[1:]:
        if inline and isinstance(row[1], float):
            row[3] = row[1] / (inline * 1e6)
            results[row[0]]["vs_python_inline"] = row[3]
    return rows, results


def _load(
    backends: list[str], sizes: Sequence[int], timeout_s: float
) -> tuple[list[list[Any]], list[list[Any]], dict[str, Any]]:
    results: dict[str, Any] = {}
    for name in backends:
        try:
            results[name] = probe_backend(name, [PROMPT_SMALL_CHARS, *sizes], timeout_s)
        except (RuntimeError, ValueError) as exc:
            results[name] = {"error": str(exc)[:200]}
    got_inline = results.get("python-inline")
    inline = {r["chars"]: r["load_s"] for r in got_inline} if isinstance(got_inline, list) else {}
    load_rows: list[list[Any]] = []
    prompt_rows: list[list[Any]] = []
    for name in backends:
        got = results[name]
        if isinstance(got, dict):
            load_rows.append([name, "-", "-", "-", "-", "-", "-", got["error"]])
            prompt_rows.append([name, *(["-"] * (len(sizes) + 1)), got["error"]])
            continue
        for r in got:
            if r["chars"] < min(sizes):
                continue
            ratio = r["extra_mb"] / (r["chars"] / 1e6)
            base = inline.get(r["chars"])
            vs = r["load_s"] / base if base else "-"
            r["extra_per_context"] = ratio
            mb = [f"{r[k]:.0f}" for k in ("host_before_mb", "host_peak_mb", "children_peak_mb")]
            extra = f"{r['extra_mb']:.0f} ({ratio:.2f}x)"
            load_rows.append([name, f"{r['chars']:,}", r["load_s"], vs, *mb, extra])
        chars = [r["system_chars"] for r in got]
        growth = max(chars) / min(chars) - 1
        flat = "yes" if growth <= PROMPT_FLAT_TOLERANCE else "NO"
        prompt_rows.append([name, *chars, f"{growth:+.2%} ({flat})"])
    return load_rows, prompt_rows, results


def main(argv: Sequence[str] | None = None) -> int:
    from polyrlm.plugins.bench.compare import backend_status
    from polyrlm.registry import get_registry

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    p = argparse.ArgumentParser(prog="polyrlm bench perf", description=__doc__)
    p.add_argument("--backends", default=None, help="comma-separated (default: all registered)")
    p.add_argument("--quick", action="store_true", help="small sizes and counts (for tests)")
    p.add_argument("--probe-timeout", type=float, default=PROBE_TIMEOUT_S, help="seconds")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "perf.json")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    names = (
        [b.strip() for b in args.backends.split(",") if b.strip()]
        if args.backends
        else list(get_registry().specs())
    )
    missing = {b: s for b in names if (s := backend_status(b)) is not None}
    backends = [b for b in names if b not in missing]
    languages = {b: get_registry().get(b).language for b in backends}
    started = time.perf_counter()

    fan_rows, fan = _fanout(backends, languages, cfg)
    s = fan["settings"]
    print_table(
        f"1. sub-call fan-out: llm_batch of N={s['n']} at C={s['concurrency']}; "
        f"0 s latency (vs bare gather) and {s['slow_latency_s']:g} s (vs ideal {s['ideal_s']:g} s)",
        ["column", "fast s", "vs bare", "slow s", "vs ideal"],
        fan_rows + [[b, "-", "-", "-", why] for b, why in missing.items()],
    )
    exec_rows, execs = _exec(backends, cfg.exec_repeats)
    print()
    print_table(
        f"2. per-exec overhead of a trivial statement, median of {cfg.exec_repeats}",
        ["backend", "median us", "vs bare", "vs inline", "start s"],
        exec_rows + [[b, "-", "-", "-", why] for b, why in missing.items()],
    )
    load_rows, prompt_rows, loads = _load(backends, cfg.sizes, args.probe_timeout)
    print()
    print_table(
        "3. context load (environment + load_context + first root prompt) and memory, one "
        "process per backend; extra = peak over before + children (x context MB)",
        ["backend", "chars", "load s", "vs inline", "before MB", "peak MB", "child MB", "extra MB"],
        load_rows + [[b, "-", "-", "-", "-", "-", "-", why] for b, why in missing.items()],
    )
    print()
    print_table(
        "4. root system prompt (characters) against context size (characters): must stay flat",
        ["backend", *(f"{c:,}" for c in (PROMPT_SMALL_CHARS, *cfg.sizes)), "growth"],
        prompt_rows,
    )
    elapsed = time.perf_counter() - started
    print(f"\nperf suite: {elapsed:.0f} s")
    path = write_json(
        args.out,
        {
            "benchmark": "perf",
            "quick": args.quick,
            "settings": asdict(cfg),
            "elapsed_s": round(elapsed, 1),
            "unavailable": missing,
            "fanout": fan,
            "exec": execs,
            "load": loads,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
