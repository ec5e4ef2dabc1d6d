"""Built-in backends; each folder registers itself through the ``polyrlm`` hook."""
