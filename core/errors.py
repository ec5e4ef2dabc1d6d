"""The few errors of polyrlm, split by who recovers.

Recoverable by the model (fed back to it as an observation, the run goes on):
:class:`CodeError`, :class:`NoCodeBlock`, :class:`WrongFence`,
:class:`SubCallError`. Fatal (the run stops with a clear message):
:class:`BackendUnavailable`, :class:`ConfigError`, :class:`ModelCallFailed`,
:class:`BudgetExhausted`, :class:`EnvironmentCrashed`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendUnavailable",
    "BudgetExhausted",
    "CodeError",
    "ConfigError",
    "EnvironmentCrashed",
    "FatalError",
    "Interrupted",
    "ModelCallFailed",
    "ModelMistake",
    "NoCodeBlock",
    "PolyrlmError",
    "PromptTooLong",
    "SubCallError",
    "UnknownBackend",
    "WrongFence",
]


class PolyrlmError(Exception):
    """Base of every error polyrlm raises."""


class ModelMistake(PolyrlmError):
    """The model did something wrong; it is told and the run goes on."""


class CodeError(ModelMistake):
    """The model's code raised or failed to parse."""


class NoCodeBlock(ModelMistake):
    """A root reply had no runnable fenced block."""


class WrongFence(ModelMistake):
    """A block was fenced in a language this environment does not run."""


class SubCallError(ModelMistake):
    """A sub-call made from the model's code failed; returned to that code."""


class PromptTooLong(SubCallError):
    """A prompt does not fit the model's context window; it was not sent."""


class FatalError(PolyrlmError):
    """The run cannot go on."""


class ConfigError(FatalError):
    """Bad options or unreadable input given by the user."""


class BackendUnavailable(FatalError):
    """A backend is known but its dependencies are not installed."""


class UnknownBackend(ConfigError):
    """No backend of that name is registered."""


class ModelCallFailed(FatalError):
    """A model call failed after its retries."""


class BudgetExhausted(FatalError):
    """A limit of the run's :class:`~polyrlm.Budget` was reached.

    ``reason`` is the stop reason of the limit (``"max_tokens"``, ...).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EnvironmentCrashed(FatalError):
    """The environment died and could not be restarted."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM in the CLI) ended :meth:`RLM.completion` cleanly:
    every environment closed, the trajectory ends with ``run_finished``.
    ``result`` holds the run so far (``stop_reason`` ``"interrupted"``, the
    best partial answer). A ``KeyboardInterrupt``, so scripts stop as usual."""

    def __init__(self, result: Any) -> None:
        super().__init__("the run was interrupted")
        self.result = result
