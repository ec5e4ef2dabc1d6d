"""pytest plugin of polyrlm (entry point ``pytest11``)."""
