"""polyrlm: Recursive Language Models over pluggable environments.

The long input (the context) lives in an environment (a Python namespace or
kernel, a DuckDB database, a Bash shell, a WebAssembly sandbox); the root
model writes code there, hands pieces to sub-models or child RLMs, and sets
its answer inside the environment.
"""

# The names load on first use (PEP 562): a process that imports one module
# of the package (the DuckDB worker, the CLI) does not pay for all of them.
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyrlm.answers import AnswerType
    from polyrlm.batch import BatchResult
    from polyrlm.environment import (
        ContractSnippets,
        EnvConfig,
        Environment,
        SubCallFailure,
        SubCalls,
    )
    from polyrlm.errors import (
        BackendUnavailable,
        BudgetExhausted,
        ConfigError,
        FatalError,
        Interrupted,
        ModelCallFailed,
        PolyrlmError,
        PromptTooLong,
        SubCallError,
        UnknownBackend,
    )
    from polyrlm.hookspecs import hookimpl
    from polyrlm.records import (
        Budget,
        Divergence,
        ExecResult,
        ReplayReport,
        Role,
        State,
        StopReason,
        Tally,
        Usage,
        VarInfo,
    )
    from polyrlm.registry import BackendSpec, get_registry
    from polyrlm.result import Result
    from polyrlm.rlm import RLM
    from polyrlm.tools import Tool, ToolError, tool

#: Where each public name lives.
_WHERE = {
    "AnswerType": "polyrlm.answers",
    "BatchResult": "polyrlm.batch",
    "ContractSnippets": "polyrlm.environment",
    "EnvConfig": "polyrlm.environment",
    "Environment": "polyrlm.environment",
    "SubCallFailure": "polyrlm.environment",
    "SubCalls": "polyrlm.environment",
    "BackendUnavailable": "polyrlm.errors",
    "BudgetExhausted": "polyrlm.errors",
    "ConfigError": "polyrlm.errors",
    "FatalError": "polyrlm.errors",
    "Interrupted": "polyrlm.errors",
    "ModelCallFailed": "polyrlm.errors",
    "PolyrlmError": "polyrlm.errors",
    "PromptTooLong": "polyrlm.errors",
    "SubCallError": "polyrlm.errors",
    "UnknownBackend": "polyrlm.errors",
    "hookimpl": "polyrlm.hookspecs",
    "Budget": "polyrlm.records",
    "Divergence": "polyrlm.records",
    "ExecResult": "polyrlm.records",
    "ReplayReport": "polyrlm.records",
    "Role": "polyrlm.records",
    "State": "polyrlm.records",
    "StopReason": "polyrlm.records",
    "Tally": "polyrlm.records",
    "Usage": "polyrlm.records",
    "VarInfo": "polyrlm.records",
    "BackendSpec": "polyrlm.registry",
    "get_registry": "polyrlm.registry",
    "Result": "polyrlm.result",
    "RLM": "polyrlm.rlm",
    "Tool": "polyrlm.tools",
    "ToolError": "polyrlm.tools",
    "tool": "polyrlm.tools",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'polyrlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__version__ = "0.1.0"

__all__ = [
    "RLM",
    "AnswerType",
    "BackendSpec",
    "BackendUnavailable",
    "BatchResult",
    "Budget",
    "BudgetExhausted",
    "ConfigError",
    "ContractSnippets",
    "Divergence",
    "EnvConfig",
    "Environment",
    "ExecResult",
    "FatalError",
    "Interrupted",
    "ModelCallFailed",
    "PolyrlmError",
    "PromptTooLong",
    "ReplayReport",
    "Result",
    "Role",
    "State",
    "StopReason",
    "SubCallError",
    "SubCallFailure",
    "SubCalls",
    "Tally",
    "Tool",
    "ToolError",
    "UnknownBackend",
    "Usage",
    "VarInfo",
    "__version__",
    "get_registry",
    "hookimpl",
    "tool",
]
