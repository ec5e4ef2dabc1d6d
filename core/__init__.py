"""polyrlm: Recursive Language Models over pluggable environments.

The long input (the context) lives in an environment (a Python namespace or
kernel, a DuckDB database, a Bash shell, a WebAssembly sandbox); the root
model writes code there, hands pieces to sub-models or child RLMs, and sets
its answer inside the environment.
"""

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
