"""Shared test set-up: no network, litellm's local price list."""

from __future__ import annotations

import os

# Before litellm is imported anywhere: it would fetch a price list otherwise.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
for _key in ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY"):
    os.environ.pop(_key, None)
