"""``polyrlm mcp``'s command line: the host's own settings (models, endpoint,
key, budget, roots, backends), read once at start-up and never from a client.

Every bad value is a :class:`~polyrlm.errors.ConfigError` (``polyrlm:
error: ...``, exit status 2) before the server speaks a word of MCP.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyrlm.cli import BUDGET_FLAGS, MODEL_ENV, SUB_MODEL_ENV, budget_from_flags
from polyrlm.errors import ConfigError
from polyrlm.plugins.mcp import HELP
from polyrlm.plugins.mcp.roots import Roots
from polyrlm.records import Budget
from polyrlm.registry import get_registry
from polyrlm.rlm import DEFAULT_BACKEND

__all__ = ["DEFAULT_MAX_RUNS", "ServerOptions", "parse_options", "require_sdk"]

#: Runs (``rlm_ask`` calls) at once; further calls wait their turn, in order.
DEFAULT_MAX_RUNS = 2

#: The budget flags, as ``polyrlm run`` spells them, and their value types.
_BUDGET_TYPES: dict[str, type[Any]] = {
    "max_iterations": int,
    "max_model_calls": int,
    "max_tokens": int,
    "max_cost_usd": float,
    "max_seconds": float,
    "max_depth": int,
}
_BUDGET_HELP = {
    "max_iterations": "root turns per run",
    "max_model_calls": "model requests per run (its whole tree)",
    "max_tokens": "tokens per run",
    "max_cost_usd": "US dollars per run",
    "max_seconds": "wall-clock seconds per run",
    "max_depth": "recursion depth (1: sub-models, 2: child RLMs too)",
}


@dataclass(frozen=True)
class ServerOptions:
    """What the server runs with; a client can choose none of it but the
    backend (from ``allowed_backends``) and lower limits."""

    model: str
    sub_model: str | None
    roots: Roots
    budget: Budget
    default_backend: str
    allowed_backends: tuple[str, ...]
    max_runs: int = DEFAULT_MAX_RUNS
    #: Keywords for :class:`~polyrlm.RLM` (api_base, api_key, max_concurrency, ...).
    rlm_options: dict[str, Any] = field(default_factory=dict)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="polyrlm mcp", description=HELP)
    p.add_argument(
        "--root",
        action="append",
        default=None,
        metavar="DIR",
        help="a directory whose files clients may name (repeatable; default: the current one)",
    )
    p.add_argument("--model", "-m", default=os.environ.get(MODEL_ENV), help=f"root (${MODEL_ENV})")
    p.add_argument(
        "--sub-model", "-s", default=os.environ.get(SUB_MODEL_ENV), help=f"(${SUB_MODEL_ENV})"
    )
    p.add_argument("--api-base", default=None, help="an OpenAI-compatible server's base URL")
    p.add_argument(
        "--api-key", default=None, help="the provider's key (default: its usual variable)"
    )
    p.add_argument("--backend", "-b", default=DEFAULT_BACKEND, help="when the client names none")
    p.add_argument(
        "--allow-backend",
        action="append",
        default=None,
        metavar="NAME",
        help="a backend clients may choose (repeatable; default: every installed one)",
    )
    for name, flag in BUDGET_FLAGS.items():
        p.add_argument(flag, type=_BUDGET_TYPES[name], default=None, help=_BUDGET_HELP[name])
    p.add_argument(
        "--max-runs",
        type=int,
        default=DEFAULT_MAX_RUNS,
        help=f"rlm_ask calls running at once; more wait (default {DEFAULT_MAX_RUNS})",
    )
    p.add_argument("--max-concurrency", type=int, default=None, help="model calls in flight")
    p.add_argument(
        "--call-timeout", type=float, default=None, help="seconds per model request (retried)"
    )
    p.add_argument("--cache", default=None, help="on-disk response cache directory")
    return p


def require_sdk() -> None:
    """The MCP SDK, version 2 (``mcp.server.mcpserver``), or a clear error."""
    if importlib.util.find_spec("mcp") is None:
        raise ConfigError('polyrlm mcp needs the MCP SDK: pip install "polyrlm[mcp]"')
    if importlib.util.find_spec("mcp.server.mcpserver") is None:
        from importlib.metadata import version

        raise ConfigError(
            f"polyrlm mcp needs mcp 2.3 or newer (found mcp {version('mcp')}): "
            'pip install -U "polyrlm[mcp]"'
        )


def _backends(default: str, allowed: Sequence[str] | None) -> tuple[str, ...]:
    """The backends clients may choose: each registered and installed."""
    registry = get_registry()
    if allowed is None:
        names = tuple(n for n, s in registry.specs().items() if s.available)
    else:
        names = tuple(dict.fromkeys(allowed))
    for name in names:
        registry.get(name)  # unknown or not installed: a clear error now
    if default not in names:
        raise ConfigError(
            f"bad --backend {default!r}: not among the allowed backends ({', '.join(names)})"
        )
    return names


def _positive(flag: str, value: float | None, *, integer: bool) -> None:
    if value is None:
        return
    if integer and value < 1:
        raise ConfigError(f"bad {flag} {value}: must be at least 1")
    if not integer and not value > 0:
        raise ConfigError(f"bad {flag} {value}: must be more than 0 seconds")


def parse_options(argv: Sequence[str]) -> ServerOptions:
    """The server's options from its command line and environment."""
    args = _parser().parse_args(list(argv))
    require_sdk()
    budget = budget_from_flags(
        {name: getattr(args, flag[2:].replace("-", "_")) for name, flag in BUDGET_FLAGS.items()}
    )
    if not args.model:
        raise ConfigError(f"no model: pass --model or set ${MODEL_ENV}")
    _positive("--max-runs", args.max_runs, integer=True)
    _positive("--max-concurrency", args.max_concurrency, integer=True)
    _positive("--call-timeout", args.call_timeout, integer=False)
    options: dict[str, Any] = {}
    for key, value in (
        ("api_base", args.api_base),
        ("api_key", args.api_key),
        ("max_concurrency", args.max_concurrency),
        ("call_timeout_s", args.call_timeout),
    ):
        if value is not None:
            options[key] = value
    if args.cache is not None:
        cache = Path(args.cache).expanduser()
        if not args.cache or (cache.exists() and not cache.is_dir()):
            raise ConfigError(f"bad --cache {args.cache!r}: not a directory")
        options["cache"] = cache
    roots = Roots([Path(r) for r in args.root] if args.root else [Path.cwd()])
    return ServerOptions(
        model=args.model,
        sub_model=args.sub_model,
        roots=roots,
        budget=budget,
        default_backend=args.backend,
        allowed_backends=_backends(args.backend, args.allow_backend),
        max_runs=args.max_runs,
        rlm_options=options,
    )
