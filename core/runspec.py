"""What every loop of one recursion tree shares (:class:`Settings`) and
what one loop ends with (:class:`Outcome`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from polyrlm.answers import AnswerType
from polyrlm.broker import Broker
from polyrlm.environment import EnvConfig, Environment
from polyrlm.errors import SubCallError
from polyrlm.recording import public_options
from polyrlm.records import Budget, StopReason
from polyrlm.tools import Tool

__all__ = ["CODE_CHANNELS", "Outcome", "Settings"]

#: The ways the root's code reaches the environment (``RLM(code_channel=...)``).
CODE_CHANNELS = ("auto", "fences", "tools")


@dataclass(frozen=True)
class Settings:
    """What every loop of one tree shares."""

    backend: type[Environment]
    env_config: EnvConfig | None
    model: str
    sub_model: str
    child_model: str
    budget: Budget
    root_options: dict[str, Any] = field(default_factory=dict)
    sub_options: dict[str, Any] = field(default_factory=dict)
    stop_at_code_end: bool = True
    #: Run a block's statements as the root writes them (polyrlm.pipeline);
    #: None: the backend's default (its ``pipelines_exactly``).
    pipeline: bool | None = None
    #: How the root's code reaches the environment: "fences" (fenced blocks,
    #: every model), "tools" (also the native run_code tool), or "auto".
    code_channel: str = "auto"
    #: The root prompt's profile (polyrlm.prompts.PROMPT_PROFILES): "auto" chooses
    #: "compact" for a small window, else "full".
    prompt_profile: str = "auto"
    #: Other sub-models the code may name: what it writes -> the litellm model.
    sub_models: dict[str, str] = field(default_factory=dict)
    #: The user's functions offered to the code (:mod:`polyrlm.tools`).
    tools: tuple[Tool, ...] = ()
    #: The declared type of the root's answer (:mod:`polyrlm.answers`).
    answer_type: AnswerType | None = None

    def offered_model(self, name: str | None) -> str:
        """The litellm model for a name the environment's code gave; only the
        host's choices: ``sub_model`` (also for None), a key of ``sub_models``
        or one of its models. Anything else is the code's error, and no
        request (and no credential) goes to a model the environment named."""
        if name is None or name == self.sub_model:
            return self.sub_model
        if name in self.sub_models:
            return self.sub_models[name]
        if name in self.sub_models.values():
            return name
        offered = ", ".join(sorted({self.sub_model, *self.sub_models})) or self.sub_model
        raise SubCallError(
            f"model {name!r} is not one the host offers; use one of: {offered} "
            "(or leave model out for the default)"
        )

    @property
    def pipelined(self) -> bool:
        """Whether root turns are pipelined on this tree's backend."""
        return self.backend.pipelines_exactly if self.pipeline is None else self.pipeline

    def record(self, broker: Broker) -> dict[str, Any]:
        """What a replay needs to rebuild this tree (JSON values, no credentials)."""
        config = self.env_config
        record = {
            "budget": self.budget.model_dump(mode="json"),
            "backend_config": None if config is None else config.model_dump(mode="json"),
            "child_model": self.child_model,
            "root_options": public_options(self.root_options),
            "sub_options": public_options(self.sub_options),
            "stop_at_code_end": self.stop_at_code_end,
            "pipeline": self.pipeline,
            "code_channel": self.code_channel,
            "prompt_profile": self.prompt_profile,
            "sub_models": self.sub_models,
            "tools": [t.record() for t in self.tools],
            "answer_schema": None if self.answer_type is None else self.answer_type.schema,
            "max_concurrency": broker.max_concurrency,
            "max_concurrency_by_depth": broker.depth_concurrency,
            "windows": broker.windows,
        }
        result: dict[str, Any] = json.loads(json.dumps(record, default=repr))
        return result


@dataclass(frozen=True)
class Outcome:
    answer: Any
    stop_reason: StopReason
    fallback: bool = False
    error: str | None = None
