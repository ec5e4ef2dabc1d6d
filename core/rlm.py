"""The public entry point: :class:`RLM`."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from polyrlm.answers import as_answer_type
from polyrlm.batch import (
    BatchResult,
    Executor,
    Job,
    check_total_budget,
    run_batch,
    trajectory_path,
)
from polyrlm.broker import Broker
from polyrlm.cache import ResponseCache
from polyrlm.config import (
    CALL_TIMEOUT_S,
    DEFAULT_MAX_CONCURRENCY,
    RETRY_ATTEMPTS,
    RETRY_INITIAL_WAIT_S,
)
from polyrlm.contexts import check_context
from polyrlm.environment import EnvConfig
from polyrlm.errors import ConfigError, Interrupted
from polyrlm.events import Event, RunFinished, RunStarted
from polyrlm.ledger import Ledger
from polyrlm.loop import Tree
from polyrlm.prompts import PROMPT_PROFILES
from polyrlm.provider import close_loop_clients
from polyrlm.records import Budget
from polyrlm.registry import get_registry, plugin_manager
from polyrlm.replay_book import ReplayBook, load_events
from polyrlm.result import Result
from polyrlm.runspec import CODE_CHANNELS, Outcome, Settings
from polyrlm.tool_calls import ToolRunner
from polyrlm.tools import as_tools
from polyrlm.trajectory import TrajectoryWriter

__all__ = ["DEFAULT_BACKEND", "RLM", "default_cache_dir"]

#: Backend used when none is named.
DEFAULT_BACKEND = "python-inline"


def default_cache_dir() -> Path:
    """``$POLYRLM_CACHE_DIR``, else ``$XDG_CACHE_HOME/polyrlm``, else ``~/.cache/polyrlm``."""
    if "POLYRLM_CACHE_DIR" in os.environ:
        return Path(os.environ["POLYRLM_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "polyrlm"


class RLM:
    """A Recursive Language Model over one backend.

    ``model`` writes code (the root); ``sub_model`` answers ``llm_query`` /
    ``llm_batch`` (defaults to ``model``); child RLMs (``rlm_query``, when
    ``max_depth >= 2``) use ``child_model`` as their root (defaults to
    ``model``). Any other keyword goes to ``litellm.acompletion`` for every
    call (``api_base``, ``api_key``, ``temperature``, ...);
    ``sub_model_options`` replaces those for sub-calls.

    ``code_channel`` says how the root's code reaches the environment:
    ``"fences"`` (fenced blocks, every model), ``"tools"`` (the native
    ``run_code`` tool offered too; fences still run), or ``"auto"`` (tools for
    Claude models with function calling, fences for the others).

    ``prompt_profile`` is the root prompt's: ``"full"`` (the instructions,
    each backend's whole guide with its examples), ``"compact"`` (a few
    lines each, for small models and small windows: about a third of the
    tokens), or ``"auto"``: compact for a root whose window, from
    ``windows=`` or litellm's map, is at most
    :data:`~polyrlm.prompts.COMPACT_WINDOW_TOKENS`, else full.

    ``sub_models`` names the other sub-models the code may ask for by
    ``llm_query(prompt, model=...)`` (and its SQL, Bash and WASM forms):
    ``{"fast": "openai/gpt-5-nano"}`` lets it write ``model="fast"`` (or the
    litellm name itself). Any other name is an error inside the environment:
    the host picks the models, and its credentials go to no model or
    endpoint the code named.

    ``tools`` are plain functions of yours (or :func:`polyrlm.tool` s) that
    the code may call; they run here, on the host, with their arguments and
    results validated against their type hints (see :mod:`polyrlm.tools`).
    ``answer_type`` (a pydantic model, a type such as ``list[str]``, or a
    JSON Schema dict) is the type every completion's answer must have,
    unless :meth:`completion` is given another (see :mod:`polyrlm.answers`).

    ``max_concurrency`` bounds the model calls in flight in the whole tree;
    ``max_concurrency_by_depth`` (``{1: 16}``) bounds those made at a depth
    (0: root calls; 1: the sub-calls of the root's code and child roots' own
    calls; ...) within it.

    ``pipeline`` runs a block's statements while the root is still writing
    it (:mod:`polyrlm.pipeline`): True, False, or None for the backend's
    default (on only where it changes nothing, :attr:`Environment.pipelines_exactly`:
    Bash). It streams every root reply.

    ``replay=`` a trajectory (a JSONL path or a list of events) serves every
    model call (and tool call) from that record instead of a provider, and
    ``result.replay`` compares the run with it step by step (see
    :mod:`polyrlm.replay`).
    """

    def __init__(
        self,
        model: str,
        sub_model: str | None = None,
        *,
        backend: str = DEFAULT_BACKEND,
        max_depth: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_concurrency_by_depth: Mapping[int, int] | None = None,
        budget: Budget | None = None,
        child_model: str | None = None,
        backend_config: EnvConfig | Mapping[str, Any] | None = None,
        cache: bool | str | Path = False,
        log: str | Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        sub_model_options: Mapping[str, Any] | None = None,
        windows: Mapping[str, int] | None = None,
        retry_attempts: int = RETRY_ATTEMPTS,
        retry_initial_wait_s: float = RETRY_INITIAL_WAIT_S,
        call_timeout_s: float = CALL_TIMEOUT_S,
        stop_at_code_end: bool = True,
        pipeline: bool | None = None,
        code_channel: str = "auto",
        prompt_profile: str = "auto",
        sub_models: Mapping[str, str] | None = None,
        tools: Sequence[Any] | None = None,
        answer_type: Any = None,
        replay: str | Path | Sequence[Event] | None = None,
        **model_options: Any,
    ) -> None:
        self.backend = get_registry().get(backend)  # fails early on a bad name
        budget = budget or Budget()
        if max_depth is not None:
            budget = budget.model_copy(update={"max_depth": max_depth})
        self.budget = Budget.model_validate(budget.model_dump())
        if max_concurrency < 1:
            raise ConfigError("max_concurrency must be at least 1")
        by_depth = dict(max_concurrency_by_depth or {})
        if any(not isinstance(d, int) or d < 0 or n < 1 for d, n in by_depth.items()):
            raise ConfigError(
                "max_concurrency_by_depth maps a depth (0 or more) to at least 1 call, "
                f"not {by_depth!r}"
            )
        if not call_timeout_s > 0:
            raise ConfigError("call_timeout_s must be more than 0 seconds")
        if code_channel not in CODE_CHANNELS:
            raise ConfigError(
                f"code_channel must be one of {', '.join(CODE_CHANNELS)}, not {code_channel!r}"
            )
        if prompt_profile not in PROMPT_PROFILES:
            raise ConfigError(
                f"prompt_profile must be one of {', '.join(PROMPT_PROFILES)}, "
                f"not {prompt_profile!r}"
            )
        if isinstance(backend_config, Mapping):
            try:
                backend_config = self.backend.Config(**backend_config)
            except ValueError as exc:
                raise ConfigError(f"bad backend_config for {backend!r}: {exc}") from exc
        self.settings = Settings(
            backend=self.backend,
            env_config=backend_config,
            model=model,
            sub_model=sub_model or model,
            child_model=child_model or model,
            budget=self.budget,
            root_options=dict(model_options),
            sub_options=dict(sub_model_options if sub_model_options is not None else model_options),
            stop_at_code_end=stop_at_code_end,
            pipeline=pipeline,
            code_channel=code_channel,
            prompt_profile=prompt_profile,
            sub_models=dict(sub_models or {}),
            tools=as_tools(tools),
            answer_type=as_answer_type(answer_type),
        )
        self.max_concurrency = max_concurrency
        self.max_concurrency_by_depth = by_depth
        self.cache_dir = (
            None
            if cache is False
            else (default_cache_dir() / "responses" if cache is True else Path(cache))
        )
        self.log = Path(log) if log is not None else None
        self.on_event = on_event
        self.windows = dict(windows or {})
        self.retry_attempts = retry_attempts
        self.retry_initial_wait_s = retry_initial_wait_s
        self.call_timeout_s = call_timeout_s
        self.replay: list[Event] | None = None
        if replay is not None:
            self.replay = load_events(replay)

    def completion(self, question: str, context: Any = None, answer_type: Any = None) -> Result:
        """Answer ``question`` about ``context`` (str, list, dict, DataFrame,
        or a :class:`~pathlib.Path`). Blocks; see :meth:`acompletion`.

        ``answer_type`` (a pydantic model, ``list[...]``, ``dict[...]``, a
        JSON Schema dict) makes ``result.answer`` an instance of it: the
        answer the code sets is validated on the host, and one that does not
        validate goes back to the model with the errors.

        Ctrl-C ends the run cleanly and raises :class:`~polyrlm.errors.Interrupted`
        (a ``KeyboardInterrupt``) whose ``result`` is the run so far."""
        if answer_type is not None:
            return self._typed(answer_type).completion(question, context)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._run_here(question, context)
        # Called from inside an event loop (a notebook): run on a loop of its own.
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = asyncio.run(self._own_loop(question, context, []))
            except BaseException as exc:
                box["error"] = exc

        thread = threading.Thread(target=target, name="polyrlm-completion")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        result: Result = box["result"]
        return result

    def _run_here(self, question: str, context: Any) -> Result:
        """Run on a new event loop in this thread; Ctrl-C cancels the run
        (asyncio's runner turns SIGINT into a cancellation of the run)."""
        kept: list[Result] = []
        with asyncio.Runner() as runner:
            try:
                return runner.run(self._own_loop(question, context, kept))
            except (KeyboardInterrupt, asyncio.CancelledError):
                if kept:
                    raise Interrupted(kept[0]) from None
                raise

    async def _own_loop(self, question: str, context: Any, kept: list[Result]) -> Result:
        try:
            return await self._acompletion(question, context, kept)
        finally:  # this loop ends here: so do the HTTP clients litellm made for it
            await close_loop_clients()

    async def acompletion(
        self, question: str, context: Any = None, answer_type: Any = None
    ) -> Result:
        """The same as :meth:`completion`, as a coroutine. Cancelling it ends
        the run cleanly (environments closed, ``run_finished`` recorded with
        stop reason ``interrupted``) and raises ``CancelledError``."""
        if answer_type is not None:
            return await self._typed(answer_type).acompletion(question, context)
        return await self._acompletion(question, context, [])

    def with_log(self, log: str | Path | None) -> RLM:
        """This RLM writing its trajectory to ``log`` (the settings are shared)."""
        other = copy.copy(self)
        other.log = Path(log) if log is not None else None
        return other

    def batch(
        self,
        questions: Sequence[str],
        contexts: Sequence[Any] | None = None,
        *,
        context: Any = None,
        executor: str | Executor = "local",
        max_workers: int | None = None,
        log_dir: str | Path | None = None,
        total_budget: Budget | None = None,
        on_progress: Callable[[int, int, int, Result], None] | None = None,
        **executor_options: Any,
    ) -> BatchResult:
        """Answer many questions at once, each an independent run with its
        own environment: ``contexts`` one per question, or one ``context``
        for all. ``executor``: ``"local"`` (worker processes, the default),
        ``"serial"`` (this process), a registered name (``"ray"``, with
        ``address=...`` for a cluster) or an :class:`~polyrlm.batch.Executor`.
        Every run keeps this RLM's budget; ``total_budget`` caps the sum
        (cost, tokens, requests, seconds): no run starts once it is spent.
        ``log_dir`` gets one trajectory per run (``run-00000.jsonl``, ...);
        ``on_progress(done, total, index, result)`` is called here as each
        run ends. See :mod:`polyrlm.batch`."""
        if contexts is not None and context is not None:
            raise ConfigError("give contexts (one per question) or context (one for all), not both")
        if contexts is not None and len(contexts) != len(questions):
            raise ConfigError(f"{len(questions)} questions but {len(contexts)} contexts")
        check_total_budget(total_budget)
        if isinstance(executor, str):
            chosen = get_registry().executor(executor)(max_workers, **executor_options)
        else:
            chosen = executor
        if chosen.name != "serial" and self.on_event is not None:
            raise ConfigError(
                "on_event is called in this process only: use executor='serial', or "
                "on_progress and log_dir with another executor"
            )
        folder = Path(log_dir) if log_dir is not None else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        jobs = [
            Job(
                index,
                question,
                contexts[index] if contexts is not None else context,
                trajectory_path(folder, index) if folder is not None else None,
            )
            for index, question in enumerate(questions)
        ]
        return run_batch(
            self.with_log(None), jobs, chosen, total_budget=total_budget, on_progress=on_progress
        )

    def _typed(self, answer_type: Any) -> RLM:
        """This RLM with another answer type (the settings are shared, frozen)."""
        other = copy.copy(self)
        other.settings = dataclasses.replace(self.settings, answer_type=as_answer_type(answer_type))
        return other

    async def _acompletion(self, question: str, context: Any, kept: list[Result]) -> Result:
        check_context(context)  # before the log is opened: a refused run overwrites nothing
        trajectory: list[Event] = []
        hook = plugin_manager().hook.on_event
        logger = TrajectoryWriter(self.log) if self.log is not None else None
        cache = ResponseCache(self.cache_dir) if self.cache_dir is not None else None
        book = None
        if self.replay is not None:
            book = ReplayBook(self.replay)

        def emit(event: Event) -> None:
            if book is not None:
                book.observe(event)
            trajectory.append(event)
            if logger is not None:
                logger.on_event(event)
            if self.on_event is not None:
                self.on_event(event)
            hook(event=event)

        ledger = Ledger(self.budget)
        broker = Broker(
            ledger,
            emit,
            max_concurrency=self.max_concurrency,
            depth_concurrency=self.max_concurrency_by_depth,
            cache=cache,
            retry_attempts=self.retry_attempts,
            retry_initial_wait_s=self.retry_initial_wait_s,
            call_timeout_s=self.call_timeout_s,
            windows=self.windows,
            replay=book,
        )
        tools = ToolRunner(self.settings.tools, emit, book, ledger.seconds_left)
        ledger.start()  # the clock starts with the run, litellm imported
        try:
            outcome = await Tree(self.settings, ledger, broker, emit, tools).run(
                question, "" if context is None else context
            )
        except asyncio.CancelledError:
            roots = [e.run_id for e in trajectory if isinstance(e, RunStarted) and not e.depth]
            ends = [e for e in trajectory if isinstance(e, RunFinished) and e.run_id in roots]
            if ends:  # the root run closed cleanly: keep what it had
                end = ends[-1]
                stopped = Outcome(end.answer, end.stop_reason, end.fallback, end.error)
                kept.append(_result(stopped, ledger, trajectory))
            raise
        finally:
            if logger is not None:
                logger.close()
            if cache is not None:
                cache.close()
        result = _result(outcome, ledger, trajectory)
        if book is not None:
            result = result.model_copy(update={"replay": book.report(trajectory, result)})
        return result


def _result(outcome: Outcome, ledger: Ledger, trajectory: list[Event]) -> Result:
    return Result(
        answer=outcome.answer,
        stop_reason=outcome.stop_reason,
        fallback=outcome.fallback,
        error=outcome.error,
        usage=ledger.usage(),
        trajectory=tuple(trajectory),
    )
