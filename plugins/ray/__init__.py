"""Batches of runs on a Ray instance or cluster (``RLM.batch(executor="ray")``)."""
