"""Per-execution overhead: a trivial statement (each backend's contract
snippet that sets ``x = 41``) run many times in each backend, beside a bare
``exec`` of the same Python statement in this process, in one run.

Run: ``python -m polyrlm.plugins.bench.exec_overhead`` (or ``polyrlm bench exec``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, print_table, write_json

__all__ = ["REPEATABLE_SET_VAR", "main", "measure_backend"]


def _bare(repeats: int) -> list[float]:
    ns: dict[str, Any] = {}
    code = compile("x = 41", "<bare>", "exec")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        exec(code, ns)
        times.append(time.perf_counter() - started)
    return times


#: Per language, a statement that stores 41 in x and may run again and again,
#: where the contract's ``set_var`` may not (SQL's CREATE TABLE fails the second time).
REPEATABLE_SET_VAR = {"sql": "CREATE OR REPLACE TABLE x AS SELECT 41 AS x"}


def measure_backend(
    backend: str, repeats: int, config: dict[str, Any] | None = None, context: Any = ""
) -> tuple[list[float], float]:
    """Seconds per execute() of the trivial snippet, and the start-up time
    (the environment made, with ``config``, and ``context`` loaded)."""
    from polyrlm.registry import get_registry
    from polyrlm.testing.contract import EchoSubCalls

    cls = get_registry().get(backend)
    started = time.perf_counter()
    env = cls(EchoSubCalls(), cls.Config(**config) if config else None)
    env.load_context(context)
    startup = time.perf_counter() - started
    try:
        snippet = REPEATABLE_SET_VAR.get(cls.language, cls.contract.set_var)
        for _ in range(5):  # warm-up
            env.execute(snippet)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = env.execute(snippet)
            times.append(time.perf_counter() - t0)
            if result.error:
                raise RuntimeError(f"{backend}: {result.error}")
    finally:
        env.close()
    return times, startup


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="polyrlm bench exec", description=__doc__)
    p.add_argument("--backends", default="python-inline,python", help="comma-separated")
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "exec_overhead.json")
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bare = statistics.median(_bare(args.repeats))
    rows: list[list[Any]] = [["bare exec", bare * 1e6, 1.0, "-"]]
    results: dict[str, Any] = {"bare exec": {"median_us": bare * 1e6}}
    inline = None
    for name in backends:
        times, startup = measure_backend(name, args.repeats)
        median = statistics.median(times)
        inline = median if name == "python-inline" else inline
        results[name] = {
            "median_us": median * 1e6,
            "p90_us": statistics.quantiles(times, n=10)[-1] * 1e6,
            "vs_bare": median / bare,
            "startup_s": startup,
        }
        rows.append([name, median * 1e6, median / bare, f"{startup:.2f}"])
    if inline:
        for name in backends:
            results[name]["vs_python_inline"] = results[name]["median_us"] / (inline * 1e6)
    print_table(
        f"per-exec overhead of a trivial statement, median of {args.repeats}",
        ["backend", "median us", "vs bare", "start s"],
        rows,
    )
    if inline:
        for name in backends:
            print(f"{name}: {results[name]['vs_python_inline']:.1f}x python-inline")
    path = write_json(
        args.out, {"benchmark": "exec_overhead", "repeats": args.repeats, "results": results}
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
