"""``polyrlm bench TASK``: one task on every backend, side by side.

For each size and instance (seeds ``seed``, ``seed + 1``, ...), the task's
generator makes the context once; each backend then runs the method
(``strategy``: every scripted strategy of the task, ``rlm``, or ``base``,
which needs no backend). A backend that is not registered, or not installed,
is listed as unavailable; a run that fails is listed with its error; neither
stops the comparison. Prints a table and writes ``OUT/TASK.json`` and
``OUT/TASK.png``; exits 1 when a run failed (status ``error``), 0 otherwise
(an unavailable backend, a run with no answer and a low score are results).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from polyrlm.cli import budget_from_flags
from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.batched import run_rlm_batch
from polyrlm.plugins.bench.methods import RunRecord, run_base, run_record, run_rlm, run_strategy
from polyrlm.plugins.bench.report import DEFAULT_OUT_DIR, write_json
from polyrlm.plugins.bench.task import Instance, Task, get_task, get_tasks
from polyrlm.records import Budget

__all__ = [
    "METHODS",
    "backend_status",
    "compare",
    "exit_status",
    "main",
    "parse_sizes",
    "warm_up",
]

#: The methods ``--method`` takes.
METHODS = ("strategy", "rlm", "base")
#: API key sent to an ``--api-base`` server when none is given (local servers ignore it).
LOCAL_API_KEY = "none"


def parse_sizes(text: str) -> list[int]:
    """``"10000,1M,8k"`` -> ``[10000, 1000000, 8000]`` (k and M are 10^3 and 10^6)."""
    sizes = []
    for part in (p.strip().lower().replace("_", "") for p in text.split(",")):
        if not part:
            continue
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1], 1)
        digits = part[:-1] if scale > 1 else part
        try:
            sizes.append(int(float(digits) * scale))
        except ValueError:
            raise ConfigError(f"bad size {part!r}: give tokens, e.g. 10000 or 1M") from None
    if not sizes:
        raise ConfigError("no sizes given")
    return sorted(set(sizes))


def backend_status(name: str) -> str | None:
    """None when ``name`` can run here, else why not."""
    from polyrlm.registry import get_registry

    specs = get_registry().specs()
    if name not in specs:
        return "unavailable: not registered (not built or not installed)"
    missing = specs[name].missing()
    if missing:
        extra = specs[name].extra
        hint = f' (pip install "polyrlm[{extra}]")' if extra else ""
        return f"unavailable: needs {', '.join(missing)}{hint}"
    return None


def warm_up(backends: Sequence[str]) -> None:
    """One trivial run per available backend, so that the first measured run
    does not pay for imports and litellm's first call (failures show later)."""
    from polyrlm.registry import get_registry
    from polyrlm.rlm import RLM
    from polyrlm.testing.scripted import ScriptedModel

    for name in backends:
        if backend_status(name) is not None:
            continue
        try:
            cls = get_registry().get(name)
            root = ScriptedModel([f"```{cls.fence_tags[0]}\n{cls.contract.set_answer}\n```"])
            rlm = RLM(root.model, backend=name, budget=Budget(max_iterations=1))
            rlm.completion("warm up", "x")
        except Exception:  # the measured run reports the same failure
            continue


def _log(log_dir: Path | None, instance: Instance, backend: str, label: str) -> Path | None:
    """Where a run keeps its trajectory: ``TASK-BACKEND-LABEL-SIZE-SEED.jsonl``."""
    if log_dir is None:
        return None
    return log_dir / f"{instance.task}-{backend}-{label}-{instance.size}-{instance.seed}.jsonl"


def _runs(
    task: Task,
    instance: Instance,
    backend: str,
    method: str,
    opts: Mapping[str, Any],
    log_dir: Path | None = None,
) -> list[RunRecord]:
    status = backend_status(backend)
    if method == "rlm":
        if status:
            return [run_record(instance, backend, method, status)]
        log = _log(log_dir, instance, backend, "rlm")
        return [run_rlm(task, instance, backend, log=log, **opts)]
    strategies = task.strategies()
    wanted = opts.get("strategies") or list(strategies)
    out = []
    for name in wanted:
        strategy = strategies[name]
        if status:
            out.append(run_record(instance, backend, "strategy", status, strategy=name))
            continue
        out.append(
            run_strategy(
                task,
                instance,
                strategy,
                backend,
                sub_model=opts.get("sub_model"),
                sub_options=opts.get("sub_options"),
                max_concurrency=opts.get("max_concurrency"),
                log=_log(log_dir, instance, backend, name),
            )
        )
    return out


def compare(
    task: str | Task,
    *,
    backends: Sequence[str],
    sizes: Sequence[int],
    method: str = "strategy",
    seed: int = 0,
    instances: int = 1,
    strategies: Sequence[str] | None = None,
    model: str | None = None,
    sub_model: str | None = None,
    options: Mapping[str, Any] | None = None,
    sub_options: Mapping[str, Any] | None = None,
    budget: Budget | None = None,
    window: int | None = None,
    max_concurrency: int | None = None,
    progress: Callable[[RunRecord], None] | None = None,
    log_dir: Path | None = None,
    executor: str | None = None,
    max_workers: int | None = None,
) -> list[RunRecord]:
    """Run ``method`` on every backend for every size; one record per run.

    ``options`` go to every model call of ``rlm`` and ``base`` (``api_base``,
    ``api_key``, ...); ``sub_options`` to sub-calls (default: ``options``).
    ``log_dir`` keeps each run's trajectory there; its record names the file
    and the run id (``polyrlm export --scores TASK.json`` matches them).
    ``executor`` (``rlm`` only) runs every instance of a backend at once,
    as one :meth:`RLM.batch` on it (``local``, ``ray``, ...).
    """
    task = get_task(task) if isinstance(task, str) else task
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")
    if method in ("rlm", "base") and not model:
        raise ConfigError(f"method {method!r} needs a model (--model)")
    if instances < 1:
        raise ConfigError("instances must be at least 1")
    if executor is not None and method != "rlm":
        raise ConfigError(
            f"--executor runs the rlm method's runs; {method!r} runs here, one after another "
            "(its scripted models live in this process)"
        )
    unknown = sorted(set(strategies or ()) - set(task.strategies()))
    if unknown:
        raise ConfigError(
            f"task {task.name!r} has no strategy {', '.join(unknown)}; "
            f"it has: {', '.join(task.strategies())}"
        )
    sub_opts = dict(sub_options if sub_options is not None else options or {})
    if method == "rlm":
        opts: dict[str, Any] = {
            "model": model,
            "sub_model": sub_model,
            "options": dict(options or {}),
            "sub_options": sub_opts,
            "budget": budget,
            "max_concurrency": max_concurrency,
        }
    else:
        opts = {
            "sub_model": sub_model,
            "sub_options": sub_opts,
            "strategies": list(strategies or ()),
            "max_concurrency": max_concurrency,
        }
    if method != "base":
        warm_up(backends)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    if executor is not None:
        every = [task.generate(seed + i, size) for size in sorted(sizes) for i in range(instances)]
        status = {b: why for b in backends if (why := backend_status(b))}
        batched = run_rlm_batch(
            task,
            every,
            backends,
            opts,
            executor=executor,
            max_workers=max_workers,
            log_dir=log_dir,
            status=status,
        )
        for record in batched:
            if progress is not None:
                progress(record)
        return batched
    records: list[RunRecord] = []
    for size in sorted(sizes):
        for i in range(instances):
            instance = task.generate(seed + i, size)
            if method == "base":
                assert model is not None
                batch = [run_base(task, instance, model=model, options=options, window=window)]
            else:
                batch = []
                for backend in backends:
                    try:
                        batch += _runs(task, instance, backend, method, opts, log_dir)
                    except Exception as exc:  # e.g. a backend that fails to start: a row
                        detail = f"{type(exc).__name__}: {exc}"[:300]
                        batch.append(run_record(instance, backend, method, "error", detail))
            for record in batch:
                if progress is not None:
                    progress(record)
            records += batch
    return records


def exit_status(records: Sequence[RunRecord]) -> int:
    """1 when a run failed (status ``error``: it raised, or stopped on an
    error), else 0; says on stderr how many failed."""
    failed = [r for r in records if r.status == "error"]
    if not failed:
        return 0
    print(f"polyrlm bench: {len(failed)} of {len(records)} runs failed", file=sys.stderr)
    return 1


def _parser(task_names: Sequence[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="polyrlm bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("task", choices=task_names)
    p.add_argument("--backends", default=None, help="comma-separated (default: all registered)")
    p.add_argument("--sizes", default=None, help="tokens, comma-separated (default: the task's)")
    p.add_argument("--method", choices=METHODS, default="strategy")
    p.add_argument("--strategies", default=None, help="comma-separated (default: all)")
    p.add_argument("--model", "-m", default=os.environ.get("POLYRLM_MODEL"), help="rlm and base")
    p.add_argument("--sub-model", "-s", default=os.environ.get("POLYRLM_SUB_MODEL"))
    p.add_argument("--api-base", default=None, help="an OpenAI-compatible server's base URL")
    p.add_argument("--api-key", default=None, help=f"with --api-base: default {LOCAL_API_KEY!r}")
    p.add_argument("--window", type=int, default=None, help="base: the model's window, tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--instances", type=int, default=1, help="instances per size (seeds)")
    p.add_argument("--max-iterations", type=int, default=None, help="rlm: root turns")
    p.add_argument("--max-cost", type=float, default=None, help="rlm: US dollars per run")
    p.add_argument("--max-concurrency", type=int, default=None, help="model calls in flight")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="directory for JSON, PNG")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--log-dir", type=Path, default=None, help="keep each run's trajectory")
    p.add_argument(
        "--executor", default=None, help="rlm: run the instances at once (local, ray, ...)"
    )
    p.add_argument("--workers", type=int, default=None, help="with --executor: runs at once")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from polyrlm.plugins.bench.output import aggregate, plot, print_rows
    from polyrlm.registry import get_registry

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = _parser(list(get_tasks())).parse_args(argv)
    task = get_task(args.task)
    backends = (
        [b.strip() for b in args.backends.split(",") if b.strip()]
        if args.backends
        else list(get_registry().specs())
    )
    sizes = parse_sizes(args.sizes) if args.sizes else list(task.default_sizes)
    options: dict[str, Any] = {}
    if args.api_base:
        options = {"api_base": args.api_base, "api_key": args.api_key or LOCAL_API_KEY}
    elif args.api_key:
        options = {"api_key": args.api_key}
    budget = budget_from_flags(
        {"max_iterations": args.max_iterations, "max_cost_usd": args.max_cost}
    )

    def progress(r: RunRecord) -> None:
        score = "-" if r.score is None else f"{r.score:.2f}"
        what = f"{r.method}:{r.strategy}" if r.strategy else r.method
        print(
            f"  {r.backend} {r.size:,} seed {r.seed} {what}: {r.status} score {score} "
            f"({r.wall_s:.2f} s)",
            file=sys.stderr,
        )

    started = time.perf_counter()
    records = compare(
        task,
        backends=backends,
        sizes=sizes,
        method=args.method,
        seed=args.seed,
        instances=args.instances,
        strategies=[s.strip() for s in args.strategies.split(",")] if args.strategies else None,
        model=args.model,
        sub_model=args.sub_model,
        options=options,
        budget=budget,
        window=args.window,
        max_concurrency=args.max_concurrency,
        progress=progress,
        log_dir=args.log_dir,
        executor=args.executor,
        max_workers=args.workers,
    )
    rows = aggregate(records)
    title = (
        f"{task.name} ({task.metric}), method {args.method}, seed {args.seed}, "
        f"{args.instances} instance(s) per size"
    )
    print_rows(title, rows)
    settings = {k: v for k, v in vars(args).items() if k not in {"out", "api_key", "log_dir"}}
    path = write_json(
        args.out / f"{task.name}.json",
        {
            "benchmark": task.name,
            "settings": {**settings, "backends": backends, "sizes": sizes},
            "elapsed_s": round(time.perf_counter() - started, 3),
            "rows": rows,
            "runs": [r.model_dump(mode="json") for r in records],
        },
    )
    print(f"wrote {path}")
    if not args.no_plot:
        png = plot(args.out / f"{task.name}.png", title, rows)
        if png is not None:
            print(f"wrote {png}")
    return exit_status(records)
