"""Test support: a scripted model, a fake OpenAI-compatible server, the contract suite."""
