"""When to retry a failed request, and how long to wait first.

Backoff doubles from the broker's initial wait, with jitter, up to
:data:`~polyrlm.config.RETRY_MAX_WAIT_S`; a provider's ``Retry-After``
(or ``retry-after-ms``) replaces it, up to :data:`RETRY_AFTER_MAX_S`. A wait
that would pass the run's deadline is not taken: the call fails at once,
saying so.
"""

from __future__ import annotations

import email.utils
import random
import time
from typing import Any

from polyrlm.config import RETRY_MAX_WAIT_S

__all__ = ["RETRY_AFTER_MAX_S", "backoff_s", "retry_after_s", "wait_problem"]

#: Seconds at most a provider's Retry-After is waited; past it the call fails.
RETRY_AFTER_MAX_S = 300.0


def _seconds(value: str | None, per_second: float) -> float | None:
    """A Retry-After value: a number of seconds (or ms), or an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value) / per_second)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_after_s(exc: BaseException) -> float | None:
    """Seconds a rate-limited or unavailable provider asked to wait, read
    from the error's response headers (litellm keeps them on the exception)."""
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        items = getattr(headers, "items", None)  # httpx.Headers or a dict
        if items is None:
            continue
        found: dict[str, Any] = {str(k).lower(): v for k, v in items()}
        if "retry-after-ms" in found:
            seconds = _seconds(str(found["retry-after-ms"]), 1000.0)
        else:
            seconds = _seconds(found.get("retry-after"), 1.0)
        if seconds is not None:
            return seconds
    return None


def backoff_s(attempt: int, initial_s: float) -> float:
    """Seconds before retry number ``attempt`` (1 = the first retry)."""
    wait = min(initial_s * 2.0 ** (attempt - 1), RETRY_MAX_WAIT_S)
    return float(wait + random.uniform(0, initial_s))  # jitter spreads retry bursts


def wait_problem(wait_s: float, asked: float | None, seconds_left: float | None) -> str | None:
    """Why a retry after ``wait_s`` is not taken, or None to take it."""
    if asked is not None and asked > RETRY_AFTER_MAX_S:
        return f"the provider asks to retry after {asked:g} s (more than {RETRY_AFTER_MAX_S:g} s)"
    if seconds_left is not None and wait_s >= seconds_left:
        return (
            f"a retry after {wait_s:.1f} s would pass the run's deadline "
            f"({seconds_left:.1f} s left)"
        )
    return None
