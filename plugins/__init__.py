"""Optional first-party hook implementations."""
