"""Spare environments: the next run's environment started ahead of it.

A Jupyter kernel or a DuckDB worker takes 0.4-0.5 s to start (a process,
its imports, its sandbox), which is all of an environment's cost in a run
whose sub-calls are fast. So when a run opens an environment of a kind that
keeps a spare (:meth:`Environment.keeps_spare`), the pool hands it the spare
started earlier for the same backend, configuration and user tools, if
there is one, and starts the next spare in a background thread, while the
run goes on. The first run of a kind in a process starts its own.

A spare is a whole environment, never used: started with sub-calls that
refuse every call (:class:`SpareSubCalls`) until a run adopts it, then
forward to that run's. Nothing passes from one run to the next: each run
gets a process of its own, as without the pool.

At most :data:`SPARES_PER_KIND` spare per kind; all are closed when the
interpreter exits, or by :func:`close_spares`. Set the environment variable
:data:`SPARES_ENV` to ``0`` to turn spares off (``polyrlm run``, one run per
process, does).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from polyrlm.environment import EnvConfig, Environment, SubCalls
from polyrlm.errors import SubCallError
from polyrlm.tools import Tool

__all__ = [
    "SPARES_ENV",
    "SPARES_PER_KIND",
    "SPARE_NICE",
    "SpareSubCalls",
    "close_spares",
    "open_environment",
]

#: Spare environments kept ready per (backend, configuration, tools).
SPARES_PER_KIND = 1
#: The environment variable that turns spares off when set to ``0``.
SPARES_ENV = "POLYRLM_SPARES"
#: Niceness of the thread that starts spares, and so of the processes and
#: threads it starts (Linux: per thread, inherited): a spare starts while a
#: run goes on, and must not take the CPU from it. A sandboxed kernel's code
#: runs at this niceness anyway (polyrlm.sandbox_watch.SANDBOX_NICE).
SPARE_NICE = 10


class SpareSubCalls:
    """The sub-calls of an environment from the pool: none until a run
    adopts it, that run's after."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self.tools = tuple(tools)
        self.target: SubCalls | None = None

    def __getattr__(self, name: str) -> Any:
        target = self.__dict__.get("target")
        if target is None:
            raise SubCallError("this environment belongs to no run yet")
        return getattr(target, name)


_Key = tuple[type, str, str]
_lock = threading.Lock()
_ready: dict[_Key, list[Future[Environment]]] = {}
_starter: ThreadPoolExecutor | None = None


def _enabled() -> bool:
    return os.environ.get(SPARES_ENV, "1") != "0"


def _key(cls: type[Environment], config: EnvConfig, tools: Sequence[Tool]) -> _Key:
    specs = json.dumps([t.spec() for t in tools], sort_keys=True, default=str)
    return cls, config.model_dump_json(), specs


def _start(cls: type[Environment], config: EnvConfig, tools: Sequence[Tool]) -> Environment:
    return cls(SpareSubCalls(tools), config)


def _lower_priority() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the spare runs as is
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SPARE_NICE)


def _start_spare(
    key: _Key, cls: type[Environment], config: EnvConfig, tools: Sequence[Tool]
) -> None:
    global _starter
    with _lock:
        waiting = _ready.setdefault(key, [])
        if len(waiting) >= SPARES_PER_KIND:
            return
        if _starter is None:
            _starter = ThreadPoolExecutor(1, "polyrlm-spare", initializer=_lower_priority)
        waiting.append(_starter.submit(_start, cls, config, tools))


def _take(key: _Key) -> Environment | None:
    """A spare of this kind: a ready one, else one still starting (waited
    for: it is further along than a new one would be); None when none."""
    with _lock:
        waiting = _ready.get(key) or []
        future = next((f for f in waiting if f.done()), None) or (waiting[0] if waiting else None)
        if future is None:
            return None
        waiting.remove(future)
    try:
        return future.result()
    except Exception:  # it failed to start: the run starts its own, and sees why
        return None


def open_environment(
    cls: type[Environment], subcalls: SubCalls, config: EnvConfig | None
) -> Environment:
    """An environment of ``cls`` for a run with ``subcalls``: the pool's
    spare when there is one, and the next spare started behind it."""
    if config is None:
        config = cls.Config()
    if not (_enabled() and cls.keeps_spare(config)):
        return cls(subcalls, config)
    tools = tuple(getattr(subcalls, "tools", ()))
    key = _key(cls, config, tools)
    env = _take(key)
    if env is None:
        env = _start(cls, config, tools)
    forward = env.subcalls
    assert isinstance(forward, SpareSubCalls)
    forward.target = subcalls
    _start_spare(key, cls, config, tools)
    return env


def close_spares() -> None:
    """Close every spare (those still starting once started)."""
    global _starter
    with _lock:
        futures = [f for waiting in _ready.values() for f in waiting]
        _ready.clear()
        starter, _starter = _starter, None
    for future in futures:
        with contextlib.suppress(Exception):  # one that failed to start: nothing to close
            future.result().close()
    if starter is not None:
        starter.shutdown(wait=True)


# At exit before the thread pools shut down (they refuse work after, and a
# kernel is stopped through its environment's own thread): threading runs
# these hooks before atexit's, the last registered first.
getattr(threading, "_register_atexit", atexit.register)(close_spares)
