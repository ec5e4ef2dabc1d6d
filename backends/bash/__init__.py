"""Bash backend: a persistent shell (being built)."""
