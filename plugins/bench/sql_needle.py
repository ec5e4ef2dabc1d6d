"""A needle in a 10,000,000-line Parquet context, on the ``sql`` backend.

A scripted root model answers with one ``LIKE`` search and ``final(...)``;
the benchmark times ``RLM.completion()`` from the call to the answer, reads
the peak resident memory of that run, and compares the root prompt's size
(the system message the root received) with the same run over a 1,000-line
Parquet file of the same shape, side by side in one run. Each measured
completion runs in a fresh subprocess, so its peak memory is its own.

The Parquet files are generated once (pyarrow, a fixed seed) into
``--cache-dir`` (default ``$POLYRLM_CACHE_DIR/bench`` or
``~/.cache/polyrlm/bench``) and reused.

Run: ``python -m polyrlm.plugins.bench.sql_needle`` (needs ``polyrlm[sql]``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, print_table, write_json

__all__ = ["NEEDLE", "ROOT_REPLY", "main", "make_parquet", "measure_once"]

#: The line hidden in the haystack, and what the answer must contain.
NEEDLE = "the secret launch code is 7714-ALPHA"
#: The scripted root model's one reply: a LIKE search that sets the answer.
ROOT_REPLY = (
    "```sql\n"
    "SELECT final(string_agg(text, chr(10))) FROM context WHERE text LIKE '%secret launch code%';\n"
    "```"
)
#: Targets from the issue: seconds, bytes, and the prompt size ratio.
TARGET_SECONDS = 3.0
TARGET_RSS_BYTES = 2**30
TARGET_PROMPT_RATIO = 0.05
#: Words per generated line, and the vocabulary they are drawn from.
WORDS_PER_LINE = 6
VOCABULARY = 2_000
#: Rows per Parquet row group of the generated files.
ROW_GROUP_ROWS = 1_000_000
_SEED = 7


def _cache_dir() -> Path:
    root = os.environ.get("POLYRLM_CACHE_DIR")
    return Path(root) / "bench" if root else Path.home() / ".cache" / "polyrlm" / "bench"


def make_parquet(lines: int, directory: Path) -> Path:
    """A Parquet file ``(line_no BIGINT, text VARCHAR)`` of ``lines`` random
    lines with :data:`NEEDLE` at 60 % of the way; made once, then reused."""
    import numpy as np

    # pyarrow has no type information; these are Any.
    pa = importlib.import_module("pyarrow")
    pc = importlib.import_module("pyarrow.compute")
    pq = importlib.import_module("pyarrow.parquet")
    path = directory / f"needle-{lines}.parquet"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == lines:
        return path
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(_SEED)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = pa.array(["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(VOCABULARY)])
    words = [
        vocab.take(pa.array(rng.integers(0, VOCABULARY, lines))) for _ in range(WORDS_PER_LINE)
    ]
    text = pc.binary_join_element_wise(*words, " ")
    at = int(lines * 0.6)
    text = pa.concat_arrays([text.slice(0, at), pa.array([NEEDLE]), text.slice(at + 1)])
    table = pa.table({"line_no": pa.array(np.arange(1, lines + 1, dtype=np.int64)), "text": text})
    partial = path.with_suffix(".partial")
    pq.write_table(table, partial, row_group_size=ROW_GROUP_ROWS)
    partial.replace(path)
    return path


def _peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _complete(path: Path) -> tuple[float, Any, int]:
    """One completion over ``path``: seconds, answer, root prompt characters."""
    from polyrlm import RLM
    from polyrlm.testing.scripted import ScriptedModel

    root = ScriptedModel([ROOT_REPLY])
    rlm = RLM(root.model, backend="sql")
    started = time.perf_counter()
    result = rlm.completion("What is the secret launch code?", path)
    seconds = time.perf_counter() - started
    if result.stop_reason != "answered":
        raise RuntimeError(f"{path.name}: stopped ({result.stop_reason}): {result.error}")
    return seconds, result.answer, len(root.calls[0][0]["content"])


def measure_once(path: Path) -> dict[str, Any]:
    """Two completions over ``path`` in this process: the first (cold: the
    process's first model call and the backend's first import; the file may
    be in the OS page cache from an earlier repeat) and a second (warm); peak
    memory before, after the first, and at the end; the root prompt's size."""
    from polyrlm.testing.scripted import ScriptedModel

    ScriptedModel(["unused"])  # litellm imported before the clock starts
    before = _peak_rss_bytes()
    cold, answer, prompt = _complete(path)
    peak_cold = _peak_rss_bytes()
    warm, _, _ = _complete(path)
    return {
        "seconds": cold,
        "seconds_warm": warm,
        "answer": answer,
        "rss_before_bytes": before,
        "peak_rss_bytes": peak_cold,
        "peak_rss_after_warm_bytes": _peak_rss_bytes(),
        "prompt_chars": prompt,
    }


def _in_subprocess(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "polyrlm.plugins.bench.sql_needle", "--child", str(path)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if NEEDLE not in str(result["answer"]):
        raise RuntimeError(f"{path.name}: wrong answer {result['answer']!r}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    p = argparse.ArgumentParser(prog="polyrlm bench sql-needle", description=__doc__)
    p.add_argument("--lines", type=int, default=10_000_000, help="lines of the big context")
    p.add_argument("--small-lines", type=int, default=1_000, help="lines of the small context")
    p.add_argument("--repeats", type=int, default=3, help="runs per context (median kept)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "sql_needle.json")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:  # the measured run, in its own process
        print(json.dumps(measure_once(args.child), default=str))
        return 0

    cache = args.cache_dir or _cache_dir()
    made = time.perf_counter()
    paths = {n: make_parquet(n, cache) for n in (args.small_lines, args.lines)}
    print(f"Parquet files ready in {time.perf_counter() - made:.1f} s under {cache}")
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in paths}
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        for n, path in paths.items():
            runs[n].append(_in_subprocess(path))
    small_prompt = runs[args.small_lines][0]["prompt_chars"]
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for n, path in paths.items():
        seconds = statistics.median(r["seconds"] for r in runs[n])
        warm = statistics.median(r["seconds_warm"] for r in runs[n])
        peak = max(r["peak_rss_bytes"] for r in runs[n])
        before = max(r["rss_before_bytes"] for r in runs[n])
        prompt = runs[n][0]["prompt_chars"]
        ratio = prompt / small_prompt
        results[str(n)] = {
            "file": path.name,
            "file_bytes": path.stat().st_size,
            "seconds_median": seconds,
            "seconds_all": [r["seconds"] for r in runs[n]],
            "seconds_warm_median": warm,
            "seconds_warm_all": [r["seconds_warm"] for r in runs[n]],
            "peak_rss_bytes": peak,
            "peak_rss_after_warm_bytes": max(r["peak_rss_after_warm_bytes"] for r in runs[n]),
            "rss_before_bytes": before,
            "prompt_chars": prompt,
            "prompt_vs_small": ratio,
            "answer": runs[n][0]["answer"],
        }
        rows.append(
            [
                f"{n:,} lines",
                path.stat().st_size / 2**20,
                seconds,
                warm,
                peak / 2**20,
                before / 2**20,
                prompt,
                ratio,
            ]
        )
    print_table(
        f"sql needle: LIKE search + final() over Parquet, RLM.completion() to answer "
        f"(median of {args.repeats}; cold: a fresh process's first completion, warm: its "
        f"second); targets (cold) < {TARGET_SECONDS:g} s, "
        f"< {TARGET_RSS_BYTES / 2**20:,.0f} MiB peak RSS, prompt within "
        f"{TARGET_PROMPT_RATIO:.0%} of {args.small_lines:,} lines",
        [
            "context",
            "file MiB",
            "cold s",
            "warm s",
            "peak RSS MiB",
            "RSS before MiB",
            "prompt chars",
            "vs small",
        ],
        rows,
    )
    big = results[str(args.lines)]
    verdict = {
        "seconds_ok": big["seconds_median"] < TARGET_SECONDS,
        "rss_ok": big["peak_rss_bytes"] < TARGET_RSS_BYTES,
        "prompt_ok": abs(big["prompt_vs_small"] - 1) <= TARGET_PROMPT_RATIO,
    }
    print("targets met:", ", ".join(f"{k}={v}" for k, v in verdict.items()))
    path = write_json(
        args.out,
        {
            "benchmark": "sql_needle",
            "lines": args.lines,
            "small_lines": args.small_lines,
            "repeats": args.repeats,
            "targets": {
                "seconds": TARGET_SECONDS,
                "peak_rss_bytes": TARGET_RSS_BYTES,
                "prompt_ratio": TARGET_PROMPT_RATIO,
            },
            "verdict": verdict,
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
