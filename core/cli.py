"""The ``polyrlm`` command line: ``run``, ``replay`` and ``backends``, and
the commands plugins add (``bench``, ``view``, ``demo``: the
``register_commands`` hook)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from polyrlm.errors import PolyrlmError
from polyrlm.provider import use_local_price_list
from polyrlm.records import Budget, StopReason
from polyrlm.result import Result

__all__ = ["main"]

#: Environment variables read for the default models.
MODEL_ENV, SUB_MODEL_ENV = "POLYRLM_MODEL", "POLYRLM_SUB_MODEL"


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="answer a question about a context")
    p.add_argument("question")
    p.add_argument("--context", "-c", default=None, help="file or directory path, or - for stdin")
    p.add_argument("--backend", "-b", default="python-inline")
    p.add_argument("--model", "-m", default=os.environ.get(MODEL_ENV), help=f"root (${MODEL_ENV})")
    p.add_argument("--sub-model", "-s", default=os.environ.get(SUB_MODEL_ENV))
    p.add_argument("--max-depth", type=int, default=None)
    p.add_argument("--max-iterations", type=int, default=None)
    p.add_argument("--max-calls", type=int, default=None, help="model calls in the whole tree")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--max-cost", type=float, default=None, help="US dollars")
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--api-base", default=None, help="an OpenAI-compatible server's base URL")
    p.add_argument(
        "--api-key", default=None, help="the provider's key (default: its usual variable)"
    )
    p.add_argument("--log", default=None, help="write the trajectory as JSONL here")
    p.add_argument("--cache", default=None, help="on-disk response cache directory")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")


def _budget(args: argparse.Namespace) -> Budget:
    fields = {
        "max_iterations": args.max_iterations,
        "max_model_calls": args.max_calls,
        "max_tokens": args.max_tokens,
        "max_cost_usd": args.max_cost,
        "max_seconds": args.max_seconds,
        "max_depth": args.max_depth,
    }
    return Budget(**{k: v for k, v in fields.items() if v is not None})


def _context(spec: str | None) -> Any:
    if spec is None:
        return ""
    if spec == "-":
        return sys.stdin.read()
    path = Path(spec).expanduser()
    if not path.exists():
        raise PolyrlmError(f"cannot read context {spec!r}: no such file or directory")
    if path.is_file() and not os.access(path, os.R_OK):
        raise PolyrlmError(f"cannot read context {spec!r}: permission denied")
    return path


def _summary(result: Result) -> str:
    t = result.usage.total
    lines = [
        f"stop: {result.stop_reason}" + (" (fallback answer)" if result.fallback else ""),
        f"calls: {t.calls} ({t.cached_calls} cached, {t.failed_calls} failed); "
        f"tokens: {t.prompt_tokens} in, {t.completion_tokens} out; "
        + (
            f"cost: ${t.cost_usd:.4f}"
            + (f" + {t.unpriced_calls} unpriced" if t.unpriced_calls else "")
        ),
        f"iterations: {result.usage.iterations}; executions: {result.usage.executions}; "
        f"time: {result.usage.elapsed_s:.2f} s",
    ]
    for role, tally in result.usage.by_role.items():
        lines.append(f"  {role}: {tally.calls} calls, {tally.total_tokens} tokens")
    if result.error:
        lines.append(f"error: {result.error}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from polyrlm.rlm import RLM

    if not args.model:
        raise PolyrlmError(f"no model: pass --model or set ${MODEL_ENV}")
    options: dict[str, Any] = {}
    if args.api_base:
        options["api_base"] = args.api_base
    if args.api_key:
        options["api_key"] = args.api_key
    if args.max_concurrency is not None:
        options["max_concurrency"] = args.max_concurrency
    rlm = RLM(
        args.model,
        args.sub_model,
        backend=args.backend,
        budget=_budget(args),
        log=args.log,
        cache=args.cache or False,
        **options,
    )
    result = rlm.completion(args.question, _context(args.context))
    if args.json:
        print(result.model_dump_json(indent=1, exclude={"trajectory"}))
    else:
        answer = result.answer
        print(answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False))
        print(_summary(result), file=sys.stderr)
    return 0 if result.stop_reason == StopReason.ANSWERED or result.fallback else 1


def _backends(args: argparse.Namespace) -> int:
    from polyrlm.registry import get_registry

    rows = []
    for name, spec in get_registry().specs().items():
        missing = spec.missing()
        if missing:
            hint = f'pip install "polyrlm[{spec.extra}]"' if spec.extra else ", ".join(missing)
            status = f"unavailable: needs {', '.join(missing)} ({hint})"
        else:
            status = "available"
        rows.append((name, status, spec.description, spec.plugin))
    width = max((len(r[0]) for r in rows), default=4)
    for name, status, description, plugin in rows:
        print(f"{name:<{width}}  {status}  {description} [plugin: {plugin}]")
    return 0


def _add_replay(sub: Any) -> None:
    p = sub.add_parser(
        "replay", help="re-run a recorded trajectory offline and say whether it came out the same"
    )
    p.add_argument("trajectory", help="a JSONL trajectory (polyrlm run --log, RLM(log=...))")
    p.add_argument(
        "--context", "-c", default=None, help="the context, when the record kept only a fingerprint"
    )
    p.add_argument("--backend", "-b", default=None, help="replay on another backend")
    p.add_argument("--log", default=None, help="write the replay's own trajectory here")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")


def _replay(args: argparse.Namespace) -> int:
    from polyrlm.replay import replay

    context = _context(args.context) if args.context is not None else None
    result = replay(args.trajectory, context=context, backend=args.backend, log=args.log)
    report = result.replay
    assert report is not None  # replay() always compares
    print(report.model_dump_json(indent=1) if args.json else report.summary())
    return 0 if report.identical else 1


#: Modules whose own warnings a command-line user can do nothing about
#: (pydantic's about litellm's types, litellm's and openai's about
#: themselves); silenced in the CLI's process only, never by the library.
THIRD_PARTY_WARNINGS = r"(litellm|openai|pydantic\._internal)(\.|$)"


def _quiet_third_party() -> None:
    use_local_price_list()  # no price-list fetch (and its warnings) at litellm's import
    warnings.filterwarnings("ignore", module=THIRD_PARTY_WARNINGS)


@contextlib.contextmanager
def _session(command: str) -> Iterator[None]:
    """What plugins hold open while ``command`` runs (``command_session``
    hook: the live progress view, for one)."""
    from polyrlm.registry import plugin_manager

    with contextlib.ExitStack() as stack:
        for manager in plugin_manager().hook.command_session(command=command):
            stack.enter_context(manager)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_third_party()
    try:
        from polyrlm.registry import get_registry

        commands = get_registry().commands()  # from plugins: register_commands hook
        parser = argparse.ArgumentParser(prog="polyrlm", description=__doc__)
        sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        _add_run(sub)
        _add_replay(sub)
        sub.add_parser("backends", help="list the backends and whether they are installed")
        for command in commands.values():  # each parses its own arguments
            sub.add_parser(command.name, help=command.help, add_help=False)
        name = argv[0] if argv else ""
        if name in commands:
            with _session(name):
                return int(commands[name].main(argv[1:]))
        args = parser.parse_args(argv)
        with _session(args.command):
            if args.command == "run":
                return _run(args)
            if args.command == "replay":
                return _replay(args)
            return _backends(args)
    except PolyrlmError as exc:
        print(f"polyrlm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
