"""``polyrlm export sft|rl TRAJECTORY... [-o OUT]``: trajectories as training data.

Reads trajectory files and directories of them (``*.jsonl``, e.g. the
``log_dir`` of ``RLM.batch``), writes JSON lines (``-o``; default standard
output) and a summary on standard error. Exit status 0; 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyrlm.errors import ConfigError

__all__ = ["HELP", "main"]

HELP = "trajectories as training data: SFT records per root turn, RL records per run"

_EPILOG = """\
scores (for --min-score and RL rewards), one source:
  --scores FILE       JSON {run_id or trajectory file: score}, or rows with "score" and
                      "run_id" / "trajectory" (a JSON list, JSON lines, or the "runs" of a
                      `polyrlm bench` JSON file)
  --reward-task TASK  a benchmark task's scorer on each root run's answer, against
                      --expected VALUE (JSON, or else the text) or the instance
                      --reward-instance SEED:SIZE (regenerated; every run must ask its question)
by default only runs that answered are exported (--include-failed-runs: every run, a
killed run as far as its turns are whole)
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyrlm export", description=HELP)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="{sft,rl}")
    for kind, text in (
        ("sft", "one record per root turn: {messages: [system, user, ..., assistant]}"),
        ("rl", "one record per run: {prompt, completion, reward, run_id, stop_reason, ...}"),
    ):
        p = kinds.add_parser(
            kind,
            help=text,
            description=text,
            epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("trajectories", nargs="+", help="trajectory files or directories of them")
        p.add_argument("-o", "--out", default="-", help="the JSONL file (default: stdout)")
        p.add_argument("--scores", default=None, metavar="FILE")
        p.add_argument("--reward-task", default=None, metavar="TASK")
        p.add_argument("--expected", default=None, metavar="VALUE")
        p.add_argument("--reward-instance", default=None, metavar="SEED:SIZE")
        p.add_argument(
            "--min-score", type=float, default=None, help="keep runs scoring at least this"
        )
        p.add_argument("--children", action="store_true", help="child runs too, each its own")
        p.add_argument("--sub-calls", action="store_true", help="each sub-call as one turn")
        p.add_argument("--include-failed-runs", action="store_true")
        if kind == "sft":
            p.add_argument(
                "--max-input-chars",
                type=int,
                default=None,
                help="drop turns whose input (the messages before the reply) is longer",
            )
            p.add_argument(
                "--weight-last",
                action="store_true",
                help='mark earlier replies "weight": 0 (OpenAI: learn the last reply only)',
            )
    return parser


def _expected(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _scores(args: argparse.Namespace) -> Any:
    from polyrlm.plugins.export.scores import TaskScorer, load_scores, parse_instance

    if args.scores is not None and args.reward_task is not None:
        raise ConfigError("give --scores or --reward-task, not both")
    if args.reward_task is None:
        if args.expected is not None or args.reward_instance is not None:
            raise ConfigError("--expected and --reward-instance go with --reward-task")
        return None if args.scores is None else load_scores(args.scores)
    if (args.expected is None) == (args.reward_instance is None):
        raise ConfigError("--reward-task needs --expected VALUE or --reward-instance SEED:SIZE")
    if args.expected is not None:
        return TaskScorer(args.reward_task, expected=_expected(args.expected))
    return TaskScorer(args.reward_task, instance=parse_instance(args.reward_instance))


def _check_out(out: str, inputs: Sequence[str]) -> None:
    if out == "-":
        return
    target = Path(out).resolve()
    if target.is_dir():
        raise ConfigError(f"bad --out {out!r}: it is a directory")
    for item in inputs:
        given = Path(item).resolve()
        if target == given or (given.is_dir() and target.parent == given):
            raise ConfigError(f"bad --out {out!r}: it is (or would join) the input {item!r}")


def main(argv: Sequence[str]) -> int:
    """``polyrlm export``: write the records, print a summary on stderr."""
    from polyrlm.plugins.export.records import ExportStats, rl_records, sft_records, write_jsonl

    args = _parser().parse_args(list(argv))
    _check_out(args.out, args.trajectories)
    stats = ExportStats()
    common: dict[str, Any] = {
        "scores": _scores(args),
        "min_score": args.min_score,
        "children": args.children,
        "sub_calls": args.sub_calls,
        "include_failed": args.include_failed_runs,
        "stats": stats,
    }
    records: Sequence[Any]
    if args.kind == "sft":
        records = sft_records(
            args.trajectories,
            max_input_chars=args.max_input_chars,
            weight_last=args.weight_last,
            **common,
        )
    else:
        records = rl_records(args.trajectories, **common)
    if args.out == "-":
        write_jsonl(records, sys.stdout)
        sys.stdout.flush()
    else:
        try:
            write_jsonl(records, args.out)
        except OSError as exc:
            raise ConfigError(f"bad --out {args.out!r}: {exc.strerror or exc}") from None
    for line in stats.summary():
        print(f"polyrlm export: {line}", file=sys.stderr)
    where = "standard output" if args.out == "-" else args.out
    print(f"polyrlm export: wrote {len(records)} {args.kind} records to {where}", file=sys.stderr)
    return 0
