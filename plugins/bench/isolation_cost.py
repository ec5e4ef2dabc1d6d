"""What isolation costs: each isolating backend with its isolation on and
off, side by side in one run (rounds interleaved, since this machine is
noisy): start-up with a context of ``--context-chars`` characters loaded,
and the per-exec overhead of a trivial statement. The kernel and bash run
with ``sandbox`` True and False; SQL with its DuckDB ``worker`` process and
in the host.

Run: ``python -m polyrlm.plugins.bench.isolation_cost`` (or ``polyrlm bench isolation``).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.exec_overhead import measure_backend
from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, print_table, write_json

__all__ = ["VARIANTS", "main"]

#: Backend -> (the option that isolates it, on, off).
VARIANTS: dict[str, tuple[str, Any, Any]] = {
    "python": ("sandbox", True, False),
    "bash": ("sandbox", True, False),
    "sql": ("worker", True, False),
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="polyrlm bench isolation", description=__doc__)
    p.add_argument("--backends", default=",".join(VARIANTS), help="comma-separated")
    p.add_argument("--repeats", type=int, default=200, help="executions per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    p.add_argument("--context-chars", type=int, default=10_000_000)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "isolation_cost.json")
    args = p.parse_args(argv)
    context = ("word " * (args.context_chars // 5 + 1))[: args.context_chars]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    kept: dict[tuple[str, bool], dict[str, list[float]]] = {}
    for _ in range(args.rounds):
        for name in backends:
            option, on, off = VARIANTS[name]
            for isolated, value in ((True, on), (False, off)):
                times, startup = measure_backend(name, args.repeats, {option: value}, context)
                slot = kept.setdefault((name, isolated), {"exec": [], "startup": []})
                slot["exec"].append(statistics.median(times))
                slot["startup"].append(startup)
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for name in backends:
        on, off = kept[(name, True)], kept[(name, False)]
        exec_on, exec_off = (statistics.median(v["exec"]) for v in (on, off))
        load_on, load_off = (statistics.median(v["startup"]) for v in (on, off))
        option = VARIANTS[name][0]
        results[name] = {
            "option": option,
            "exec_us": {"isolated": exec_on * 1e6, "not_isolated": exec_off * 1e6},
            "start_and_load_s": {"isolated": load_on, "not_isolated": load_off},
            "exec_ratio": exec_on / exec_off,
            "load_ratio": load_on / load_off,
        }
        rows.append(
            [
                f"{name} ({option})",
                exec_on * 1e6,
                exec_off * 1e6,
                exec_on / exec_off,
                load_on,
                load_off,
                load_on / load_off,
            ]
        )
    print_table(
        f"isolation on vs off: per-exec median of {args.repeats} (us), and start-up with "
        f"{args.context_chars:,} characters loaded (s); median of {args.rounds} rounds",
        ["backend", "exec on", "exec off", "ratio", "load on", "load off", "ratio"],
        rows,
    )
    path = write_json(
        args.out,
        {
            "benchmark": "isolation_cost",
            "repeats": args.repeats,
            "rounds": args.rounds,
            "context_chars": args.context_chars,
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
