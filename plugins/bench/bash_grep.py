"""A needle in a 40 MB text context, found with ``grep`` on the ``bash``
backend, beside ``python-inline`` finding it with ``re``, in one run.

A scripted root model answers with one block that searches and sets the
answer (``grep ... | final`` in bash, ``FINAL(re.search(...))`` in Python).
Each column times ``RLM.completion()`` from the call to the answer (the
environment's start, the context's placement, the root call, the search,
the close), median of ``--repeats``; ``exec s`` is the search block alone.
The context is given both as a ``str`` (written to a file by the bash
backend) and as a ``Path`` to a file on disk (bound into the sandbox, not
copied). The bash columns run sandboxed (bubblewrap) when it is installed,
plus one column with ``sandbox=False``.

Run: ``python -m polyrlm.plugins.bench.bash_grep`` (target: under 2 s for bash).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import string
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, print_table, write_json

__all__ = ["NEEDLE", "ROOT_REPLIES", "TARGET_SECONDS", "main", "make_text", "measure"]

#: The sentence hidden in the haystack; the answer is its code.
NEEDLE = "The secret launch code is 7714-ALPHA."
ANSWER = "7714-ALPHA"
#: The scripted root model's one reply, per language.
ROOT_REPLIES = {
    "bash": (
        "```bash\n"
        "grep -o -m 1 'launch code is [0-9]*-[A-Z]*' \"$CONTEXT\" | cut -d ' ' -f 4 | final\n"
        "```"
    ),
    "python": (
        "```python\n"
        "import re\n"
        "FINAL(re.search(r'launch code is (\\d+-[A-Z]+)', context).group(1))\n"
        "```"
    ),
}
#: The issue's target for the bash columns, in seconds.
TARGET_SECONDS = 2.0
#: Words per generated line, and the vocabulary they are drawn from.
WORDS_PER_LINE = 10
VOCABULARY = 2_000
_SEED = 7


def make_text(size_bytes: int, seed: int = _SEED) -> str:
    """About ``size_bytes`` of random lowercase lines (ASCII), with
    :data:`NEEDLE` on a line of its own at 60 % of the way."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(VOCABULARY)
    ]
    lines: list[str] = []
    total = 0
    while total < size_bytes:
        words = rng.choices(vocab, k=WORDS_PER_LINE * 10_000)
        for i in range(0, len(words), WORDS_PER_LINE):
            line = " ".join(words[i : i + WORDS_PER_LINE])
            lines.append(line)
            total += len(line) + 1
            if total >= size_bytes:
                break
    lines.insert(int(len(lines) * 0.6), NEEDLE)
    return "\n".join(lines) + "\n"


def measure(
    backend: str, context: Any, config: dict[str, Any] | None = None
) -> tuple[float, float, Any]:
    """Seconds of one completion, seconds of its search block, and its answer."""
    from polyrlm import RLM
    from polyrlm.events import CodeExecuted
    from polyrlm.registry import get_registry
    from polyrlm.testing.scripted import ScriptedModel

    language = get_registry().get(backend).language
    root = ScriptedModel([ROOT_REPLIES[language]])
    rlm = RLM(root.model, backend=backend, backend_config=config)
    started = time.perf_counter()
    result = rlm.completion("What is the secret launch code?", context)
    total = time.perf_counter() - started
    block = next(e.duration_s for e in result.trajectory if isinstance(e, CodeExecuted))
    return total, block, result.answer


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    p = argparse.ArgumentParser(prog="polyrlm bench bash-grep", description=__doc__)
    p.add_argument("--mb", type=float, default=40.0, help="context size in MB (10**6 bytes)")
    p.add_argument("--repeats", type=int, default=3, help="runs per column (median kept)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "bash_grep.json")
    args = p.parse_args(argv)
    text = make_text(int(args.mb * 1_000_000))
    with tempfile.TemporaryDirectory(prefix="polyrlm-bench-") as folder:
        path = Path(folder) / "haystack.txt"
        path.write_text(text)
        columns: list[tuple[str, str, Any, dict[str, Any] | None]] = [
            ("bash", "str", text, None),
            ("bash", "Path", path, None),
            ("bash", "str", text, {"sandbox": False}),
            ("python-inline", "str", text, None),
            ("python-inline", "Path", path, None),
        ]
        measure("bash", "warm-up: " + NEEDLE)  # imports, litellm's first call
        measure("python-inline", "warm-up: " + NEEDLE)
        times: dict[int, list[tuple[float, float, Any]]] = {i: [] for i in range(len(columns))}
        for _ in range(args.repeats):  # interleaved, so drift hits every column alike
            for i, (backend, _kind, context, config) in enumerate(columns):
                times[i].append(measure(backend, context, config))
    from polyrlm.registry import get_registry

    sandboxed = bool(get_registry().get("bash").sandboxed)
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for i, (backend, kind, _context, config) in enumerate(columns):
        name = backend
        if backend == "bash":
            name += (
                " (unsandboxed)" if config else (" (sandboxed)" if sandboxed else " (unsandboxed)")
            )
        total = statistics.median(t for t, _, _ in times[i])
        block = statistics.median(b for _, b, _ in times[i])
        correct = all(str(a) == ANSWER for _, _, a in times[i])
        key = f"{name} {kind}"
        results[key] = {"total_s": total, "exec_s": block, "correct": correct}
        if backend == "bash":
            results[key]["under_target"] = total < TARGET_SECONDS
        rows.append([name, kind, total, block, "yes" if correct else "NO"])
    print_table(
        f"needle in a {len(text) / 1e6:.1f} MB text context: completion() to answer, "
        f"median of {args.repeats} (target for bash: under {TARGET_SECONDS:g} s)",
        ["column", "context", "total s", "exec s", "correct"],
        rows,
    )
    met = all(r.get("under_target", True) and r["correct"] for r in results.values())
    print(f"bash under {TARGET_SECONDS:g} s and correct: {'yes' if met else 'NO'}")
    out = write_json(
        args.out,
        {
            "benchmark": "bash_grep",
            "context_bytes": len(text),
            "repeats": args.repeats,
            "target_s": TARGET_SECONDS,
            "results": results,
        },
    )
    print(f"wrote {out}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
