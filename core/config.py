"""Every limit and default of polyrlm, as named constants with their units.

The README's "Limits" table lists these; change both together.
"""

from __future__ import annotations

__all__ = [
    "CALL_TIMEOUT_S",
    "CAPTURE_LIMIT_CHARS",
    "CHARS_PER_TOKEN",
    "CHILD_QUESTION_CHARS",
    "CLOSE_TIMEOUT_S",
    "CREDENTIAL_OPTIONS",
    "DEADLINE_GRACE_S",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITERATIONS",
    "DEFAULT_MAX_OUTPUT_CHARS",
    "EXEC_GRACE_S",
    "EXEC_TIMEOUT_S",
    "MIN_EXEC_LIMIT_S",
    "PREVIEW_CHARS",
    "RETRY_ATTEMPTS",
    "RETRY_INITIAL_WAIT_S",
    "RETRY_MAX_WAIT_S",
    "SCHEMA_VERSION",
]

#: Version of the trajectory JSONL format; written on every line. 2 added
#: turn_started, batch_started and the root run's settings and context
#: record; 3 added a root reply's native tool calls and the prompt tokens
#: served from a provider's cache; 4 added the requests (retries included)
#: of a model call and the stop reason ``interrupted``; 5 added tool calls
#: (``tool_called``), typed answers' validation (``answer_set``'s
#: ``valid`` and ``errors``) and the root's system prompt (the first
#: ``turn_started``); 6 added the parts of pipelined blocks
#: (``code_executed``'s ``part`` and ``first_line``); older files still read.
SCHEMA_VERSION = 6

#: Model options that are credentials: never written to a trajectory, never
#: part of a request's digest (the same request with another key is the same).
CREDENTIAL_OPTIONS = frozenset(
    {
        "api_key",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "azure_ad_token",
        "vertex_credentials",
        "extra_headers",
        "headers",
    }
)

#: Model calls in flight at once per recursion tree (the broker's semaphore).
DEFAULT_MAX_CONCURRENCY = 16
#: Root turns (model replies) a run may take before the fallback turn.
DEFAULT_MAX_ITERATIONS = 20
#: Levels of sub-calls below the root: 1 = sub-models, 2 = child RLMs, ...
DEFAULT_MAX_DEPTH = 1
#: Characters of one execution's output shown to the model (head + tail kept).
DEFAULT_MAX_OUTPUT_CHARS = 20_000
#: Characters of output an environment keeps in memory per execution; the rest
#: is counted and dropped at once, so `print` of gigabytes cannot exhaust memory.
CAPTURE_LIMIT_CHARS = 1_000_000
#: Seconds one code execution may run before it is interrupted.
EXEC_TIMEOUT_S = 120.0

#: Seconds one model request may take before it counts as a timeout (retried).
CALL_TIMEOUT_S = 600.0
#: Attempts per model call, the first included, on rate limits, 5xx, timeouts.
RETRY_ATTEMPTS = 4
#: Seconds before the first retry; doubles per retry with jitter.
RETRY_INITIAL_WAIT_S = 1.0
#: Seconds at most between two retries.
RETRY_MAX_WAIT_S = 30.0

#: Characters of the context shown to the root model as a preview.
PREVIEW_CHARS = 300
#: Characters per token used to estimate token counts in context metadata.
CHARS_PER_TOKEN = 4
#: Characters of a child RLM's question put in its prompt (the rest stays in
#: its environment as `context`).
CHILD_QUESTION_CHARS = 4_000

#: Seconds a block is given at least when the run's deadline is nearer than
#: its timeout (an interrupt needs a moment to land).
MIN_EXEC_LIMIT_S = 0.05
#: Seconds past the deadline (``max_seconds``) within which a run has ended:
#: blocks interrupted, sub-calls cancelled, environments closed.
DEADLINE_GRACE_S = 5.0
#: Seconds an environment is given to close when a run is interrupted or
#: past its deadline; one that takes longer is left to die with the process.
CLOSE_TIMEOUT_S = 2.0

#: Seconds past an execution's own timeout after which the core gives up on
#: the environment (it did not interrupt itself), abandons it and starts anew.
EXEC_GRACE_S = 10.0
