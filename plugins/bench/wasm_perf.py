"""The ``wasm`` backend's costs, beside ``python-inline``, in one run:

* start: a new environment ready to run (session opened, helper booted,
  context loaded), in a fresh process with an empty module cache (cold: the
  runtime is compiled), in a fresh process with the cache filled (warm: the
  compiled module is loaded from disk), and again in the same process (hot);
* per-exec overhead: the median time of ``x = 1`` over many executions;
* a loop of the model's own code (1,000,000 iterations), watched (so it can
  be interrupted at the timeout) and unwatched;
* a 10 MB needle search through ``RLM(...).completion()`` with scripted
  models: partition, ``llm_batch``, answer.

Run: ``python -m polyrlm.plugins.bench.wasm_perf`` (``--skip-cold`` leaves out the
minute-long compile).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, print_table, write_json

__all__ = ["main", "needle_search", "per_exec", "start_in_subprocess"]

#: Size of the needle-search context, in characters.
NEEDLE_CONTEXT_CHARS = 10_000_000
#: Iterations of the loop benchmark.
LOOP_ITERATIONS = 1_000_000
NEEDLE = "The secret launch code is 7714-ALPHA."
SEARCH = """```python
size = 1_000_000
chunks = [context[i:i + size] for i in range(0, len(context), size)]
replies = llm_batch([f"Find the launch code in this text, or say NONE.\\n{c}" for c in chunks])
FINAL([r for r in replies if r != "NONE"][0])
```"""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.3f}"


def _probe(cache_dir: str) -> None:
    """In a subprocess: time one environment's start, print it as JSON."""
    from polyrlm.backends.wasm.environment import WasmEnvironment
    from polyrlm.testing.contract import EchoSubCalls

    config = WasmEnvironment.Config(cache_dir=Path(cache_dir))
    times = []
    for _ in range(2):  # the first pays for the module, the second is hot
        started = time.perf_counter()
        with WasmEnvironment(EchoSubCalls(), config) as env:
            env.load_context("")
            assert env.execute("x = 1").error is None
            times.append(time.perf_counter() - started)
    print(json.dumps({"first_s": times[0], "hot_s": times[1]}))


def start_in_subprocess(cache_dir: Path) -> dict[str, float]:
    """Start times measured in a fresh interpreter using ``cache_dir``."""
    done = subprocess.run(
        [sys.executable, "-m", "polyrlm.plugins.bench.wasm_perf", "--probe", str(cache_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def per_exec(backend: str, code: str, repeats: int, **config: Any) -> float:
    """Median seconds of ``execute(code)`` on a fresh environment of ``backend``."""
    from polyrlm.registry import get_registry
    from polyrlm.testing.contract import EchoSubCalls

    cls = get_registry().get(backend)
    with cls(EchoSubCalls(), cls.Config(**config) if config else None) as env:
        env.load_context("")
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = env.execute(code)
            times.append(time.perf_counter() - started)
            assert result.error is None, result.error
    return statistics.median(times)


def _haystack(size: int) -> str:
    line = "nothing to see in this line of the haystack, move along.\n"
    text = (line * (size // len(line) + 1))[:size]
    middle = size // 2 + 12_345
    return text[:middle] + NEEDLE + text[middle + len(NEEDLE) :]


def needle_search(backend: str, context: str) -> float:
    """Seconds from ``completion()`` to the answer, scripted root and sub-model."""
    from polyrlm import RLM
    from polyrlm.testing.scripted import ScriptedModel

    root = ScriptedModel([SEARCH])
    sub = ScriptedModel(
        lambda messages: "7714-ALPHA" if "7714-ALPHA" in messages[-1]["content"] else "NONE"
    )
    started = time.perf_counter()
    result = RLM(root.model, sub.model, backend=backend).completion("The code?", context)
    elapsed = time.perf_counter() - started
    if result.answer != "7714-ALPHA":
        raise RuntimeError(f"{backend}: needle search failed: {result.error or result.answer}")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    p = argparse.ArgumentParser(prog="polyrlm bench wasm-perf", description=__doc__)
    p.add_argument("--repeats", type=int, default=300, help="executions per per-exec column")
    p.add_argument("--skip-cold", action="store_true", help="leave out the cold compile")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "wasm_perf.json")
    args = p.parse_args(argv)
    if args.probe:
        _probe(args.probe)
        return 0

    from polyrlm.backends.wasm.environment import wasm_cache_dir

    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    if not args.skip_cold:
        with tempfile.TemporaryDirectory(prefix="polyrlm-wasm-cold-") as empty:
            cold = start_in_subprocess(Path(empty) / "cache")
        results["cold_start_s"] = cold["first_s"]
        rows.append(["start: cold (empty cache, new process)", _ms(cold["first_s"]), ""])
    warm = start_in_subprocess(wasm_cache_dir())
    results["warm_start_s"], results["hot_start_s"] = warm["first_s"], warm["hot_s"]
    rows.append(["start: warm (cached module, new process)", _ms(warm["first_s"]), ""])
    rows.append(["start: hot (same process)", _ms(warm["hot_s"]), ""])

    inline = per_exec("python-inline", "x = 1", args.repeats)
    wasm = per_exec("wasm", "x = 1", args.repeats)
    results["exec_s"] = {"python-inline": inline, "wasm": wasm, "ratio": wasm / inline}
    rows.append(["exec `x = 1`: python-inline (median)", _ms(inline), "1.0"])
    rows.append(["exec `x = 1`: wasm (median)", _ms(wasm), f"{wasm / inline:.1f}"])

    loop = f"for i in range({LOOP_ITERATIONS}):\n    pass"
    loops = {
        "python-inline": per_exec("python-inline", loop, 5),
        "wasm, loops watched": per_exec("wasm", loop, 5),
        "wasm, loops not watched": per_exec("wasm", loop, 5, interrupt_loops=False),
    }
    results["loop_s"] = loops
    for name, seconds in loops.items():
        ratio = f"{seconds / loops['python-inline']:.1f}"
        rows.append([f"loop of {LOOP_ITERATIONS:,}: {name}", _ms(seconds), ratio])

    context = _haystack(NEEDLE_CONTEXT_CHARS)
    needle_search("python-inline", _haystack(200_000))  # warm-up: litellm, scripted provider
    needles = {name: needle_search(name, context) for name in ("python-inline", "wasm")}
    results["needle_10mb_s"] = needles
    for name, seconds in needles.items():
        ratio = f"{seconds / needles['python-inline']:.1f}"
        rows.append([f"10 MB needle search: {name}", _ms(seconds), ratio])

    print_table("wasm backend costs (ratio to python-inline)", ["what", "ms", "x"], rows)
    path = write_json(args.out, {"benchmark": "wasm_perf", "results": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
