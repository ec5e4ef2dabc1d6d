"""A loop's opening: the root's system prompt (core instructions, the
environment's guide, the answer's type, the tools, the context's metadata)
and its first question, and whether it is offered the native run_code tool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from polyrlm.contexts import describe_context
from polyrlm.environment import Environment
from polyrlm.prompts import first_user_message, run_code_tool, system_prompt
from polyrlm.provider import LiteLLM
from polyrlm.runspec import Settings
from polyrlm.tools import Tool

__all__ = ["code_tools", "opening"]


def code_tools(
    settings: Settings, provider: LiteLLM, model: str, language: str
) -> list[dict[str, Any]] | None:
    """The run_code tool, when this root gets the native code channel."""
    channel = settings.code_channel
    if channel == "auto":  # Claude drifts into XML tool calls in prose when offered none
        wanted = "claude" in model.lower() and provider.calls_functions(model)
        channel = "tools" if wanted else "fences"
    return [run_code_tool(language)] if channel == "tools" else None


def opening(
    settings: Settings,
    provider: LiteLLM,
    env: Environment,
    tools: Sequence[Tool],
    context: Any,
    depth: int,
    question: str,
    profile: str = "full",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The first messages of a loop at ``depth``, and its run_code tool (or
    None). The answer's type is the root's alone; ``tools`` are the user
    tools this loop's code may call; ``profile`` the prompt profile,
    "full" or "compact" (:func:`~polyrlm.prompts.chosen_profile`)."""
    parts = [env.compact_guide() if profile == "compact" else env.prompt_guide()]
    if depth == 0 and settings.answer_type is not None:
        parts.append(env.answer_guide(settings.answer_type))
    if tools:
        parts.append(env.tools_guide(tools))
    model = settings.model if depth == 0 else settings.child_model
    code_tool = code_tools(settings, provider, model, env.language)
    budget = settings.budget
    system = system_prompt(
        "\n".join(parts),
        describe_context(context),
        max_iterations=budget.max_iterations,
        depth=depth,
        max_depth=budget.max_depth,
        tool_language=env.language if code_tool else None,
        sub_models=sorted(settings.sub_models),
        profile=profile,
    )
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": first_user_message(question, profile, env.fence_tags[0])},
    ]
    return messages, code_tool
