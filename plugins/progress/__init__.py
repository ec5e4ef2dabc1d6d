"""The live progress view of ``polyrlm run`` and ``polyrlm replay`` in the
terminal (rich): each run's depth, root turn and what it waits for, the
``llm_batch`` fan-outs as done / total, and the totals. Silent when standard
error is not a terminal.

Use it from Python around any run::

    from polyrlm.plugins.progress.view import Progress

    with Progress() as progress:
        RLM(..., on_event=progress.on_event).completion(...)
"""
