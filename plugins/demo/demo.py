"""``polyrlm demo``: the main job, offline on one machine.

It starts a local model server (llama.cpp with SmolLM2-135M-Instruct, see
:mod:`polyrlm.plugins.demo.local_model`), runs the ``sniah`` task (one needle in about 1M
tokens) on every installed backend with the scripted ``filter-map`` strategy
as the root and the local model as the sub-model, prints the comparison
table, writes ``OUT/demo.json``, every run's trajectory
(``OUT/trajectories/*.jsonl``) and the HTML view of one run.

By default the root is a scripted strategy, so the demo needs no 1 GB
download; the sub-model's replies are real model output. ``--root local``
makes it a true RLM: Qwen2.5-Coder-1.5B-Instruct (:mod:`.root_model`,
joined from its wheels and checked) served beside the sub-model writes the
code on every backend, with the compact prompt profile its 8,192-token
window gets. ``--sub-model`` (with ``--api-base`` for an OpenAI-compatible
server) uses a provider's model as the sub-model instead of the local server.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.filter_map import FILTER_MAP
from polyrlm.plugins.bench.methods import RunRecord, run_record, run_rlm, run_strategy

if TYPE_CHECKING:
    from polyrlm.plugins.demo.local_model import LocalModelServer

__all__ = [
    "DEMO_BACKEND_ORDER",
    "DEMO_OUT_DIR",
    "DEMO_ROOTS",
    "DEMO_SIZES",
    "DEMO_TASK",
    "RealRoot",
    "main",
    "run_demo",
]

#: The task the demo runs.
DEMO_TASK = "sniah"
#: Context sizes (tokens) run when ``--sizes`` is not given.
DEMO_SIZES = "1M"
#: Where the JSON, the trajectories and the HTML view go unless ``--out`` says otherwise.
DEMO_OUT_DIR = Path("demo-results")
#: Backends listed first, in this order; any other registered backend follows.
DEMO_BACKEND_ORDER = ("python-inline", "python", "sql", "bash", "wasm")
#: ``--root`` choices: the scripted filter-map strategy, or the local code-writing model.
DEMO_ROOTS = ("scripted", "local")

_SCRIPTED_ROOT = (
    "The root here is a scripted strategy (filter-map: split the context into small "
    "chunks, keep the chunks that best match the question's words, llm_batch the question "
    "over them, answer with the most common reply), replayed through the real loop, so that "
    "the demo needs no model download; --root local has a real model write the code."
)
_LOCAL_ROOT = (
    "The root is a real model: Qwen2.5-Coder-1.5B-Instruct (Apache-2.0, by the Qwen team, "
    "Alibaba Cloud) writes the code on each backend, on this machine's CPU."
)


@dataclass(frozen=True)
class RealRoot:
    """A model as the root: its litellm name, options and window (tokens)."""

    model: str
    options: dict[str, Any]
    window: int


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="polyrlm demo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--sizes", default=DEMO_SIZES, help=f"tokens, e.g. 10k,1M (default: {DEMO_SIZES})"
    )
    p.add_argument("--backends", default=None, help="comma-separated (default: every installed)")
    p.add_argument("--out", type=Path, default=DEMO_OUT_DIR, help="directory for the results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--root",
        choices=DEMO_ROOTS,
        default="scripted",
        help="scripted: the filter-map strategy (default, no download); local: "
        "Qwen2.5-Coder-1.5B writes the code (a 1.07 GB download, see the README)",
    )
    p.add_argument("--model", default=None, help="a GGUF file for the local server")
    p.add_argument("--sub-model", default=None, help="a litellm model, not the local server")
    p.add_argument("--api-base", default=None, help="with --sub-model: an OpenAI-compatible URL")
    p.add_argument("--api-key", default=None, help="with --api-base (default: a dummy key)")
    return p


def _backends(spec: str | None) -> tuple[list[str], list[tuple[str, str]]]:
    """The backends to run, and the skipped ones with why."""
    from polyrlm.plugins.bench.compare import backend_status
    from polyrlm.registry import get_registry

    if spec:
        wanted = [b.strip() for b in spec.split(",") if b.strip()]
    else:
        known = list(get_registry().specs())
        wanted = [b for b in DEMO_BACKEND_ORDER if b in known]
        wanted += [b for b in known if b not in wanted]
    run, skipped = [], []
    for name in wanted:
        status = backend_status(name)
        if status is None:
            run.append(name)
        else:
            skipped.append((name, status))
    if not run:
        raise ConfigError("no backend to run: " + "; ".join(f"{b}: {s}" for b, s in skipped))
    return run, skipped


@contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM becomes SystemExit, so the ``with`` blocks (the server) unwind."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave the handler alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(
    *,
    backends: Sequence[str],
    sizes: Sequence[int],
    out: Path,
    sub_model: str,
    sub_options: dict[str, Any],
    seed: int = 0,
    root: RealRoot | None = None,
) -> tuple[list[RunRecord], dict[str, Path]]:
    """Every backend at every size with ``filter-map``, or with ``root``
    writing the code; the records and each run's trajectory file, by
    ``"<backend> <size>"``."""
    from polyrlm.plugins.bench.compare import warm_up
    from polyrlm.plugins.bench.task import get_task

    task = get_task(DEMO_TASK)
    warm_up(backends)
    records: list[RunRecord] = []
    logs: dict[str, Path] = {}
    for size in sizes:
        instance = task.generate(seed, size)
        for backend in backends:
            log = out / "trajectories" / f"{task.name}-{size}-{backend}.jsonl"
            try:
                if root is None:
                    record = run_strategy(
                        task,
                        instance,
                        FILTER_MAP,
                        backend,
                        sub_model=sub_model,
                        sub_options=sub_options,
                        log=log,
                    )
                else:
                    record = run_rlm(
                        task,
                        instance,
                        backend,
                        model=root.model,
                        sub_model=sub_model,
                        sub_options=sub_options,
                        options={**root.options, "windows": {root.model: root.window}},
                        log=log,
                    )
            except Exception as exc:  # a backend that fails to start: a row, not a stop
                detail = f"{type(exc).__name__}: {exc}"[:300]
                record = run_record(instance, backend, "strategy", "error", detail)
            if log.exists():
                logs[f"{backend} {size}"] = log
            score = "-" if record.score is None else f"{record.score:.2f}"
            print(
                f"  {backend} {size:,} tokens: {record.status}, score {score}, "
                f"{record.iterations} turns, {record.sub_calls} sub-calls "
                f"({record.wall_s:.1f} s)",
                file=sys.stderr,
            )
            records.append(record)
    return records, logs


def _write_view(records: Sequence[RunRecord], logs: dict[str, Path], out: Path) -> Path | None:
    """The HTML view of the first run that answered (else the first that ran)."""
    from polyrlm.plugins.view import write_html

    ran = [r for r in records if f"{r.backend} {r.size}" in logs]
    if not ran:
        return None
    chosen = next((r for r in ran if r.status == "ok"), ran[0])
    path = out / f"{DEMO_TASK}-{chosen.size}-{chosen.backend}.html"
    return write_html(logs[f"{chosen.backend} {chosen.size}"], path)


def _real_provider_help(sizes: str, backends: Sequence[str]) -> str:
    names = ",".join(backends)
    return f"""\
The same with a real provider (set OPENAI_API_KEY, or use any litellm model):
  # this scripted root, a hosted sub-model instead of the local one
  polyrlm demo --sub-model openai/gpt-5-nano
  # a real root model that writes the code itself, on every backend
  polyrlm bench sniah --method rlm --model openai/gpt-5-mini --sub-model openai/gpt-5-nano \\
      --backends {names} --sizes {sizes} --max-cost 1
  # the scripted strategies with a sub-model on your own OpenAI-compatible server
  polyrlm bench sniah --strategies filter-map --sub-model openai/<served name> \\
      --api-base http://127.0.0.1:8080/v1 --backends {names} --sizes {sizes}"""


@contextmanager
def _models(
    args: argparse.Namespace,
) -> Iterator[tuple[str, dict[str, Any], LocalModelServer | None, RealRoot | None]]:
    """The sub-model's name and options, the local server while it runs, and
    the real root (``--root local``: served by that server too)."""
    from polyrlm.plugins.demo.local_model import LOCAL_API_KEY, LocalModelServer

    hosted = args.sub_model is not None
    if hosted and args.root == "scripted":
        options: dict[str, Any] = {}
        if args.api_base:
            options = {"api_base": args.api_base, "api_key": args.api_key or LOCAL_API_KEY}
        print(f"The sub-model is {args.sub_model}: its replies are real model output.")
        yield args.sub_model, options, None, None
        return
    root_path = None
    if args.root == "local":
        from polyrlm.plugins.demo.root_model import root_model_path

        root_path = root_model_path()  # joined and checked once; refused if wrong
    server = LocalModelServer(args.model, root_path=root_path)
    served = server.model_path.name + (f" and {root_path.name}" if root_path else "")
    print(f"Starting the local server for {served} (llama.cpp; a few seconds) ...")
    with server:  # stopped on return, error, Ctrl-C and SIGTERM
        print(
            f"The local models are served by llama.cpp at {server.base_url} (pid "
            f"{server.pid}): every reply is real model output, taken as it comes."
        )
        root = None
        if root_path is not None:
            root = RealRoot(server.root_model, server.root_options(), server.root_n_ctx)
        if hosted:
            yield args.sub_model, {}, server, root
        else:
            yield server.model, server.options(), server, root


def main(argv: Sequence[str] | None = None) -> int:
    from polyrlm.plugins.bench.compare import parse_sizes
    from polyrlm.plugins.bench.output import aggregate, fmt_size, print_rows
    from polyrlm.plugins.bench.report import write_json
    from polyrlm.plugins.bench.task import get_task

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    args = _parser().parse_args(argv)
    if args.api_base and not args.sub_model:
        raise ConfigError("--api-base needs --sub-model (the model the server serves)")
    if args.sub_model and args.model:
        raise ConfigError("--model (a GGUF file for the local server) excludes --sub-model")
    sizes = parse_sizes(args.sizes)
    backends, skipped = _backends(args.backends)
    for name, why in skipped:
        print(f"skipping backend {name}: {why}", file=sys.stderr)
    print(_SCRIPTED_ROOT if args.root == "scripted" else _LOCAL_ROOT)
    started = time.perf_counter()
    try:
        with _terminate_on_sigterm(), _models(args) as (sub_model, sub_options, server, root):
            records, logs = run_demo(
                backends=backends,
                sizes=sizes,
                out=args.out,
                sub_model=sub_model,
                sub_options=sub_options,
                seed=args.seed,
                root=root,
            )
    except KeyboardInterrupt:
        print("polyrlm demo: interrupted", file=sys.stderr)
        return 130
    rows = aggregate(records)
    root_name = "scripted filter-map" if root is None else root.model
    title = f"{DEMO_TASK}, root: {root_name}, sub-model: {sub_model}, seed {args.seed}"
    print_rows(title, rows)
    metric = get_task(DEMO_TASK).metric
    given = "the sub-model" if root is None else "the root"
    print(f"Answers, as {given} gave them ({metric} against the expected):")
    for r in records:
        print(f"  {r.backend:<14} {fmt_size(r.size):<5} {r.answer!r}  (expected {r.expected!r})")
    served = server.chat_requests() if server is not None else None
    if served is not None:
        sub_calls = sum(r.sub_calls for r in records)
        print(f"The local server answered {served} chat requests; the runs made {sub_calls}.")
    path = write_json(
        args.out / "demo.json",
        {
            "benchmark": f"demo-{DEMO_TASK}",
            "root": "scripted strategy filter-map" if root is None else root.model,
            "root_model": str(server.root_path) if server and server.root_path else None,
            "sub_model": sub_model,
            "local_model": str(server.model_path) if server is not None else None,
            "server_chat_requests": served,
            "settings": {"backends": backends, "sizes": sizes, "seed": args.seed},
            "skipped": dict(skipped),
            "elapsed_s": round(time.perf_counter() - started, 3),
            "rows": rows,
            "runs": [r.model_dump(mode="json") for r in records],
            "trajectories": {k: str(v) for k, v in logs.items()},
        },
    )
    print(f"wrote {path} and {len(logs)} trajectories in {args.out / 'trajectories'}")
    if logs:  # a recorded run re-runs without the server: its replies are in the record
        print(f"replay one offline, no model needed: polyrlm replay {next(iter(logs.values()))}")
    view = _write_view(records, logs, args.out)
    if view is not None:
        print(f"wrote {view} (the HTML view of one run)")
    if root is None:
        print(
            "Again: the root was a scripted strategy, not a model (polyrlm demo --root local: "
            "a real one, offline); the sub-model's replies were real."
        )
    print(_real_provider_help(args.sizes, backends))
    return 0
