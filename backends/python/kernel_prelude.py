# Runs inside the Jupyter kernel, once per kernel start, after the bridge
# client's source (so llm_query & co. are defined in this namespace). The
# host fills in __POLYRLM_CAPTURE_LIMIT__. Standard library only; it must
# not import polyrlm: nothing of the host's package or memory comes in. The
# host ships polyrlm.pycell's source first, as the module _polyrlm_pycell.
# ruff: noqa
import json as _json
import sys as _sys

import _polyrlm_pycell as _pycell

_cap = _pycell.Capped(__POLYRLM_CAPTURE_LIMIT__)


class _CappedStream:
    """Forwards up to the per-cell limit, counts and drops the rest, so a
    flood of output costs time in the kernel, not megabytes on the wire."""

    def __init__(self, inner):
        self._inner = inner

    def write(self, text):
        text = str(text)
        piece = _cap.take(text)
        if piece:
            self._inner.write(piece)
        return len(text)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _reset_capture(*_args):
    _cap.reset()
    for name in ("stdout", "stderr"):
        stream = getattr(_sys, name)
        if not isinstance(stream, _CappedStream):
            setattr(_sys, name, _CappedStream(stream))


# What the model is given, and IPython's own names: not the model's variables.
_HIDDEN = {*_pycell.PROVIDED, "open", "In", "Out", "exit", "quit", "get_ipython"}


def _report(user_ns):
    ready, content = _pycell.read_answer(user_ns)
    return _json.dumps({"ready": ready, "answer": content, "dropped": _cap.dropped})


def _state(user_ns):
    listed = _pycell.list_variables(user_ns, _HIDDEN)
    return _json.dumps([{"name": n, "type": t, "size": size} for n, t, size in listed])


def _install(user_ns):
    _pycell.provide(
        user_ns,
        llm_query=llm_query,
        llm_batch=llm_batch,
        rlm_query=rlm_query,
        rlm_batch=rlm_batch,
        SubCallError=SubCallError,
        SubCallFailure=SubCallFailure,
    )
    user_ns.update(
        __polyrlm_report=lambda: _report(user_ns),
        __polyrlm_state=lambda: _state(user_ns),
    )
    ip = get_ipython()
    ip.events.register("pre_run_cell", _reset_capture)
    _reset_capture()
