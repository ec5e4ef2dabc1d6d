"""Pipelined turns against whole blocks (:mod:`polyrlm.pipeline`), side by side.

A scripted root streams, at ``--tokens-per-s`` (50 by default: a realistic
rate for a hosted model), one block of three statements, each asking the
sub-model about a third of the context (each sub-call takes ``--sub-latency``
seconds, 2 by default), then sets the answer from the three replies. The
root's reply comes through the fake OpenAI-compatible server's real SSE
stream and litellm's real streaming code (the server sends 8 characters an
event, so the rate is ``8 / CHARS_PER_TOKEN / tokens_per_s`` seconds an
event). Every backend runs the same task in its own language, with
pipelining off and on, alternately, in one run; the table gives the wall
times of ``RLM.completion`` and their ratio (the target: at most 0.7), and
checks that both answers are the same. Without pipelining the block's
three sub-calls wait for the whole block (stream time + 3 x latency); with
it each statement runs as soon as it is written, so the floor is the first
statement's stream time + 3 x latency.

Run: ``python -m polyrlm.plugins.bench.pipelined`` (or ``polyrlm bench pipelined``).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, print_table, write_json

__all__ = ["BLOCKS", "TARGET_RATIO", "main", "run_once"]

#: The pipelined wall time may be at most this fraction of the whole-block one.
TARGET_RATIO = 0.7
#: Characters of one SSE event of the fake server (its ``STREAM_CHUNK_CHARS``).
EVENT_CHARS = 8
#: A sub-prompt as a root writes one: the task, the reader, the form of the reply.
_ASK = (
    "You are reading the {part} third of a long quarterly report, written by the finance "
    "team for the board. Summarise its main findings in three sentences, name every figure "
    "it gives with its unit, and say which of them changed since the last quarter and by "
    "how much:"
)
_NOTES = (
    "First, a summary of the opening third of the report, with every figure it names.",
    "Then the middle third, so that the two summaries can be compared line by line.",
    "And the closing third; the three summaries together answer the question.",
)
_PY = [
    ("opening", "context[: len(context) // 3]"),
    ("middle", "context[len(context) // 3 : 2 * len(context) // 3]"),
    ("closing", "context[2 * len(context) // 3 :]"),
]
_SQL = [
    ("opening", "line_no <= getvariable('third')"),
    ("middle", "line_no > getvariable('third') AND line_no <= 2 * getvariable('third')"),
    ("closing", "line_no > 2 * getvariable('third')"),
]
_BASH = [
    ("opening", 'head -n "$third" "$CONTEXT"'),
    ("middle", 'head -n "$((2 * third))" "$CONTEXT" | tail -n "$third"'),
    ("closing", 'tail -n "+$((2 * third + 1))" "$CONTEXT"'),
]
_NAMES = ("first", "middle", "last")


def _python_block() -> str:
    lines = []
    for note, name, (part, piece) in zip(_NOTES, _NAMES, _PY, strict=True):
        lines += [f"# {note}", f'{name} = llm_query("{_ASK.format(part=part)}\\n\\n" + {piece})']
    lines.append('FINAL(first + " | " + middle + " | " + last)')
    return "\n".join(lines)


def _sql_block() -> str:
    lines = ["SET VARIABLE third = (SELECT count(*) FROM context) // 3;"]
    for note, name, (part, where) in zip(_NOTES, _NAMES, _SQL, strict=True):
        lines += [
            f"-- {note}",
            f"CREATE TABLE {name}_part AS SELECT llm('{_ASK.format(part=part)}' || chr(10) "
            f"|| string_agg(text, chr(10) ORDER BY line_no)) AS s FROM context WHERE {where};",
        ]
    lines.append(
        "SELECT final((SELECT s FROM first_part) || ' | ' || (SELECT s FROM middle_part) "
        "|| ' | ' || (SELECT s FROM last_part));"
    )
    return "\n".join(lines)


def _bash_block() -> str:
    lines = ['third=$(( $(wc -l < "$CONTEXT") / 3 ))']
    for note, name, (part, source) in zip(_NOTES, _NAMES, _BASH, strict=True):
        lines += [f"# {note}", f'{name}=$({source} | llm "{_ASK.format(part=part)}")']
    lines.append('final "$first | $middle | $last"')
    return "\n".join(lines)


#: The root's one block, by language.
BLOCKS = {"python": _python_block(), "sql": _sql_block(), "bash": _bash_block()}
_PART = re.compile(r"reading the (\w+) third")


def run_once(backend: str, pipeline: bool, sub_latency_s: float, event_s: float) -> dict[str, Any]:
    """One completion on ``backend``: wall seconds, answer, parts run."""
    from polyrlm import RLM
    from polyrlm.events import CodeExecuted
    from polyrlm.registry import get_registry
    from polyrlm.testing.fake_server import FakeOpenAIServer

    cls = get_registry().get(backend)
    block = f"I will summarise each third.\n```{cls.fence_tags[0]}\n{BLOCKS[cls.language]}\n```"

    def respond(body: dict[str, Any]) -> str:
        messages = body["messages"]
        if messages[0]["role"] == "system":
            return block
        found = _PART.search(str(messages[-1]["content"]))
        return f"{found.group(1) if found else 'no'} summary"

    def latency(body: dict[str, Any]) -> float:
        return 0.0 if body["messages"][0]["role"] == "system" else sub_latency_s

    context = "\n".join(f"Line {i}: revenue grew by {i % 7} percent." for i in range(1, 31))
    events: list[Any] = []
    with FakeOpenAIServer(respond, stream_delay_s=event_s, latency_for=latency) as server:
        rlm = RLM(
            "openai/root", "openai/sub", backend=backend, api_base=server.base_url,
            api_key="fake", pipeline=pipeline, on_event=events.append,
        )  # fmt: skip
        started = time.perf_counter()
        result = rlm.completion("Summarise the report.", context)
        wall = time.perf_counter() - started
    parts = [e for e in events if isinstance(e, CodeExecuted)]
    return {
        "seconds": wall,
        "answer": result.answer,
        "stop_reason": str(result.stop_reason),
        "execs": len(parts),
        "error": result.error or next((p.error for p in parts if p.error), None),
    }


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from polyrlm.config import CHARS_PER_TOKEN
    from polyrlm.plugins.bench.compare import backend_status

    p = argparse.ArgumentParser(prog="polyrlm bench pipelined", description=__doc__)
    p.add_argument("--backends", default="python-inline,python,sql,bash,wasm")
    p.add_argument("--tokens-per-s", type=float, default=50.0, help="the root's streaming rate")
    p.add_argument("--sub-latency", type=float, default=2.0, help="seconds per sub-call")
    p.add_argument("--repeats", type=int, default=1, help="runs of each mode (median kept)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "pipelined.json")
    args = p.parse_args(argv)
    event_s = EVENT_CHARS / CHARS_PER_TOKEN / args.tokens_per_s
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        why = backend_status(backend)
        if why is not None:
            rows.append([backend, None, None, None, why, None])
            continue
        run_once(backend, False, 0.0, 0.0)  # warm: imports, first calls, the backend's start
        runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for _ in range(args.repeats):  # alternately, so drift hits both alike
            for mode in (False, True):
                runs[mode].append(run_once(backend, mode, args.sub_latency, event_s))
        whole = statistics.median(r["seconds"] for r in runs[False])
        piped = statistics.median(r["seconds"] for r in runs[True])
        same = all(r["answer"] == runs[False][0]["answer"] for r in runs[False] + runs[True])
        ratio = piped / whole
        results[backend] = {
            "whole_s": whole, "pipelined_s": piped, "ratio": ratio, "same_answer": same,
            "answer": runs[True][0]["answer"], "runs": {str(k): v for k, v in runs.items()},
        }  # fmt: skip
        rows.append([backend, whole, piped, ratio, "yes" if same else "NO", runs[True][0]["execs"]])
    block_tokens = {k: len(v) // CHARS_PER_TOKEN for k, v in BLOCKS.items()}
    print_table(
        f"pipelined turns: a 3-statement block streamed at {args.tokens_per_s:g} tokens/s "
        f"(about {block_tokens} tokens), sub-calls {args.sub_latency:g} s each; "
        f"RLM.completion wall time, median of {args.repeats}; target ratio <= {TARGET_RATIO}",
        ["backend", "whole s", "pipelined s", "ratio", "same answer", "parts"],
        rows,
    )
    ok = all(r["ratio"] <= TARGET_RATIO and r["same_answer"] for r in results.values())
    path = write_json(
        args.out,
        {
            "benchmark": "pipelined",
            "tokens_per_s": args.tokens_per_s,
            "sub_latency_s": args.sub_latency,
            "event_s": event_s,
            "block_tokens": block_tokens,
            "target_ratio": TARGET_RATIO,
            "results": results,
            "ok": ok,
        },
    )
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
