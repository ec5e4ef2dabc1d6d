"""The ``polyrlm`` command line: ``run``, ``replay`` and ``backends``, and
the commands plugins add (``bench``, ``view``, ``demo``: the
``register_commands`` hook)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import stat
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from polyrlm.answers import as_answer_type
from polyrlm.contexts import check_context, decode_text
from polyrlm.errors import ConfigError, Interrupted, PolyrlmError
from polyrlm.provider import use_local_price_list
from polyrlm.records import Budget, StopReason
from polyrlm.result import Result
from polyrlm.spares import SPARES_ENV

__all__ = ["BUDGET_FLAGS", "budget_from_flags", "main"]

#: Exit status of a run ended by Ctrl-C or SIGTERM (128 + SIGINT, as shells do).
EXIT_INTERRUPTED = 130

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
    p.add_argument(
        "--call-timeout", type=float, default=None, help="seconds per model request (retried)"
    )
    p.add_argument("--api-base", default=None, help="an OpenAI-compatible server's base URL")
    p.add_argument(
        "--api-key", default=None, help="the provider's key (default: its usual variable)"
    )
    p.add_argument("--log", default=None, help="write the trajectory as JSONL here")
    p.add_argument("--cache", default=None, help="on-disk response cache directory")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument(
        "--answer-schema",
        default=None,
        metavar="FILE",
        help="a JSON Schema file: the answer must validate against it (printed as JSON)",
    )
    p.add_argument(
        "--pipeline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run a block's statements while the root writes it (default: the backend's; "
        "on for bash)",
    )


#: The Budget field each budget flag sets (``polyrlm run``; ``bench`` uses some).
BUDGET_FLAGS = {
    "max_iterations": "--max-iterations",
    "max_model_calls": "--max-calls",
    "max_tokens": "--max-tokens",
    "max_cost_usd": "--max-cost",
    "max_seconds": "--max-seconds",
    "max_depth": "--max-depth",
}


def budget_from_flags(values: Mapping[str, Any]) -> Budget:
    """A :class:`Budget` from flag values by field (``None``: not given); a
    value the Budget refuses is a :class:`ConfigError` naming its flag."""
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return Budget(**given)
    except ValidationError as exc:  # the Budget's bounds are the one source of truth
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        flag = BUDGET_FLAGS.get(field, field)
        message = str(first["msg"])
        raise ConfigError(
            f"bad {flag} {given.get(field)!r}: {message[:1].lower()}{message[1:]}"
        ) from None


def _budget(args: argparse.Namespace) -> Budget:
    return budget_from_flags(
        {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in BUDGET_FLAGS.items()}
    )


def _stdin_text() -> str:
    """Standard input, read as bytes and decoded strictly (UTF-8)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream put in its place (tests, an embedding program)
        return str(sys.stdin.read())
    with contextlib.suppress(OSError, ValueError):
        mode = os.fstat(stream.fileno()).st_mode
        if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and not stream.isatty():
            # /dev/zero and the like never end: refused before reading.
            raise ConfigError(
                "standard input is a device, not a pipe or a file: `--context -` reads it to "
                "its end"
            )
    return decode_text(stream.read(), "on standard input")


def _context(spec: str | None) -> Any:
    """The context ``--context`` names, checked (:func:`check_context`):
    ``-`` is standard input, anything else a path; none is no context."""
    if spec is None:
        return ""
    if spec == "-":
        text = _stdin_text()
        if not text:  # given explicitly, so "" cannot mean "no context" here
            raise ConfigError(
                "the context on standard input is empty: pipe something in, or drop --context"
            )
        check_context(text)
        return text
    if not spec:
        raise ConfigError("bad --context: an empty path (- reads standard input)")
    path = Path(spec).expanduser()
    check_context(path)
    return path


def _writable(flag: str, value: str | None, *, directory: bool) -> Path | None:
    """The path ``flag`` names for the run to write (``--log``: a file,
    ``--cache``: a directory), refused now rather than after the run has cost
    something."""
    if value is None:
        return None
    if not value:
        raise ConfigError(f"bad {flag}: an empty path")
    path = Path(value).expanduser()
    if path.exists():
        if directory != path.is_dir():
            what = "not a directory" if directory else "a directory (name the file to write)"
            raise ConfigError(f"bad {flag} {value!r}: {what}")
        target = path
    else:
        target = next(p for p in path.absolute().parents if p.exists())
        if not target.is_dir():
            raise ConfigError(f"bad {flag} {value!r}: {str(target)!r} is not a directory")
    if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
        raise ConfigError(f"bad {flag} {value!r}: permission denied")
    return path


def _within(written: Path | None, read: str | None) -> bool:
    """``written`` is the file ``read`` names, or lies in the directory it
    names (where it would become part of what is read)."""
    if written is None or read in (None, "", "-"):
        return False
    inside, source = written.resolve(), Path(read).expanduser().resolve()
    return inside == source or source in inside.parents


def _answer_schema(path: str | None) -> Any:
    """The answer's JSON Schema from ``--answer-schema FILE`` (checked as one)."""
    if path is None:
        return None
    try:
        schema = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"bad --answer-schema {path!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"bad --answer-schema {path!r}: not JSON ({exc})") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"bad --answer-schema {path!r}: a JSON Schema is an object")
    return as_answer_type(schema)


def _check_run_args(args: argparse.Namespace) -> None:
    """Every bad value of ``polyrlm run``, before anything runs or is written."""
    _budget(args)
    _answer_schema(args.answer_schema)
    if args.max_concurrency is not None and args.max_concurrency < 1:
        raise ConfigError(f"bad --max-concurrency {args.max_concurrency}: must be at least 1")
    if args.call_timeout is not None and not args.call_timeout > 0:
        raise ConfigError(f"bad --call-timeout {args.call_timeout}: must be more than 0 seconds")
    log = _writable("--log", args.log, directory=False)
    _writable("--cache", args.cache, directory=True)
    if _within(log, args.context):
        raise ConfigError(f"bad --log {args.log!r}: it would overwrite or join the context")


def _check_replay_args(args: argparse.Namespace) -> None:
    """Every bad value of ``polyrlm replay``, before the record is read."""
    log = _writable("--log", args.log, directory=False)
    if _within(log, args.trajectory):
        raise ConfigError(f"bad --log {args.log!r}: it is the record being replayed")


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

    _check_run_args(args)
    os.environ.setdefault(SPARES_ENV, "0")  # one run per process: a spare would be wasted
    if not args.model:
        raise PolyrlmError(f"no model: pass --model or set ${MODEL_ENV}")
    options: dict[str, Any] = {}
    if args.api_base:
        options["api_base"] = args.api_base
    if args.api_key:
        options["api_key"] = args.api_key
    if args.max_concurrency is not None:
        options["max_concurrency"] = args.max_concurrency
    if args.call_timeout is not None:
        options["call_timeout_s"] = args.call_timeout
    rlm = RLM(
        args.model,
        args.sub_model,
        backend=args.backend,
        budget=_budget(args),
        log=args.log,
        cache=args.cache or False,
        answer_type=_answer_schema(args.answer_schema),
        pipeline=args.pipeline,
        **options,
    )
    try:
        result = rlm.completion(args.question, _context(args.context))
    except Interrupted as stop:  # Ctrl-C or SIGTERM: the run closed cleanly
        _show(stop.result, args.json)
        return EXIT_INTERRUPTED
    _show(result, args.json)
    return 0 if result.stop_reason == StopReason.ANSWERED or result.fallback else 1


def _show(result: Result, as_json: bool) -> None:
    if as_json:
        print(result.model_dump_json(indent=1, exclude={"trajectory"}))
        return
    answer = result.answer
    if answer is not None:
        print(answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False))
    print(_summary(result), file=sys.stderr)


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

    _check_replay_args(args)
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


def _sigterm(signum: int, frame: Any) -> None:
    # SIGTERM ends a run as Ctrl-C does: asyncio's runner cancels it cleanly.
    signal.raise_signal(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_third_party()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _sigterm) if in_main else None
    try:
        return _main(argv)
    except KeyboardInterrupt:  # outside a run (an import, a plugin command): no traceback
        print("polyrlm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str]) -> int:
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
