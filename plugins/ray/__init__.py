"""Batches of runs on a Ray instance or cluster (``RLM.batch(executor="ray")``).

The executor lives in :mod:`polyrlm.plugins.ray.executor` (it imports Ray
when built); the plugin module only registers it."""
