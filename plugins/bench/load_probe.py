"""Context-load measurements of one backend, run in a fresh process per
backend by ``polyrlm bench perf`` (so the memory measured is that backend's).

It warms up (imports, litellm, one run on a tiny context); then, for each
size in ascending order, it builds a text context of that many characters
(filler prose, one paragraph per line) and runs the real loop with a scripted root whose
one reply sets the answer. Measured per size:

* ``load_s``: from the run's start to the root's first call: the environment
  constructed, the context loaded, the guide and the first root prompt built;
* ``system_chars``: that first root prompt's system message, in characters
  (it must not grow with the context);
* ``host_peak_mb``: this process's peak resident memory during the run (the
  peak is reset before each size through ``/proc/self/clear_refs``), beside
  ``host_before_mb``, its memory with the context built but not loaded;
* ``children_peak_mb``: the peak resident memory of every live descendant
  (kernel, shell), read once the context is loaded;
* ``extra_mb``: what loading cost: host peak over before, plus the children.

Prints one JSON line. Run:
``python -m polyrlm.plugins.bench.load_probe --backend sql --chars 1000000,10000000``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["descendants", "main", "measure"]

_KB = 1024


def _status_mb(pid: int | str, field: str) -> float:
    """A memory field of /proc/PID/status (VmRSS, VmHWM), in MB; 0 when gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * _KB / 1e6
    return 0.0


def _reset_peak() -> bool:
    """Reset this process's peak resident memory (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def descendants(root: int | None = None) -> list[int]:
    """Every live process below ``root`` (default: this one), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    out, frontier = [], {os.getpid() if root is None else root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        out += sorted(frontier)
    return out


def _children_peak_mb() -> float:
    """Sum of the peak resident memory of every live descendant (kernels,
    shells), each since its own exec (not the parent's pages it forked with)."""
    return sum(_status_mb(pid, "VmHWM") for pid in descendants())


def _run(backend: str, context: str, marks: dict[str, Any]) -> Any:
    from polyrlm import RLM
    from polyrlm.registry import get_registry
    from polyrlm.testing.scripted import ScriptedModel

    cls = get_registry().get(backend)
    reply = f"```{cls.fence_tags[0]}\n{cls.contract.set_answer}\n```"

    def root(messages: list[dict[str, Any]]) -> str:
        if "first_call" not in marks:  # the context is loaded: measure before it is freed
            marks["first_call"] = time.perf_counter()
            marks["system_chars"] = len(str(messages[0]["content"]))
            marks["children_mb"] = _children_peak_mb()
        return reply

    scripted = ScriptedModel(root)
    marks["start"] = time.perf_counter()
    result = RLM(scripted.model, backend=backend).completion("Set the answer.", context)
    marks["end"] = time.perf_counter()
    if str(result.answer) != "42":
        raise RuntimeError(f"{backend}: the run did not answer: {result.error or result.answer}")
    return result


def measure(backend: str, sizes: Sequence[int]) -> list[dict[str, Any]]:
    """The measurements of one backend at each size (ascending), in this
    process; the peak is reset before each load, so each size has its own."""
    from polyrlm.plugins.bench.text import Filler

    _run(backend, "warm-up", {})  # imports, litellm's first call, the backend's first start
    out = []
    for chars in sorted(sizes):
        context = "\n".join(Filler(random.Random(chars)).paragraphs(chars + 1))  # n-1 newlines
        gc.collect()
        exact = _reset_peak()
        before = _status_mb("self", "VmRSS")
        marks: dict[str, Any] = {}
        _run(backend, context, marks)
        peak = _status_mb("self", "VmHWM") if exact else _ru_peak_mb()
        out.append(
            {
                "backend": backend,
                "chars": len(context),
                "load_s": round(marks["first_call"] - marks["start"], 4),
                "run_s": round(marks["end"] - marks["start"], 4),
                "system_chars": marks["system_chars"],
                "host_before_mb": round(before, 1),
                "host_peak_mb": round(peak, 1),
                "children_peak_mb": round(marks["children_mb"], 1),
                "extra_mb": round(max(0.0, peak - before) + marks["children_mb"], 1),
                "peak_exact": exact,
            }
        )
        del context
    return out


def _ru_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _KB / 1e6


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    p = argparse.ArgumentParser(
        prog="python -m polyrlm.plugins.bench.load_probe", description=__doc__
    )
    p.add_argument("--backend", required=True)
    p.add_argument("--chars", required=True, help="context sizes in characters, comma-separated")
    args = p.parse_args(argv)
    sizes = [int(c) for c in args.chars.split(",") if c.strip()]
    print(json.dumps(measure(args.backend, sizes)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
