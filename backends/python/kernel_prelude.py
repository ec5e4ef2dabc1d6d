# Runs inside the Jupyter kernel, once per kernel start, after the bridge
# client's source (so llm_query & co. are defined in this namespace). The
# host fills in __POLYRLM_CAPTURE_LIMIT__. Standard library only; it must
# not import polyrlm: nothing of the host's package or memory comes in.
# ruff: noqa
import json as _json
import sys as _sys

_capture = {"limit": __POLYRLM_CAPTURE_LIMIT__, "kept": 0, "dropped": 0}


class _CappedStream:
    """Forwards up to the per-cell limit, counts and drops the rest, so a
    flood of output costs time in the kernel, not megabytes on the wire."""

    def __init__(self, inner):
        self._inner = inner

    def write(self, text):
        text = str(text)
        room = _capture["limit"] - _capture["kept"]
        if room > 0:
            piece = text[:room]
            self._inner.write(piece)
            _capture["kept"] += len(piece)
        _capture["dropped"] += len(text) - min(len(text), max(room, 0))
        return len(text)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def _reset_capture(*_args):
    _capture["kept"] = 0
    _capture["dropped"] = 0
    for name in ("stdout", "stderr"):
        stream = getattr(_sys, name)
        if not isinstance(stream, _CappedStream):
            setattr(_sys, name, _CappedStream(stream))


def _plain(value):
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        return value.item()  # numpy scalars
    except Exception:
        return str(value)


_PROVIDED = {
    "llm_query",
    "llm_batch",
    "rlm_query",
    "rlm_batch",
    "FINAL",
    "answer",
    "open",
    "SubCallError",
    "SubCallFailure",
    "In",
    "Out",
    "exit",
    "quit",
    "get_ipython",
}


def _report(user_ns):
    answer = user_ns.get("answer")
    if not isinstance(answer, dict):
        answer = {}
    ready = bool(answer.get("ready"))
    return _json.dumps(
        {"ready": ready, "answer": _plain(answer.get("content")), "dropped": _capture["dropped"]}
    )


def _state(user_ns):
    out = []
    for key, value in list(user_ns.items()):
        if key in _PROVIDED or key.startswith("_") or type(value).__name__ == "module":
            continue
        try:
            size = len(value)
        except Exception:
            size = None
        out.append({"name": key, "type": type(value).__name__, "size": size})
    return _json.dumps(out)


def _install(user_ns):
    answer = {"content": "", "ready": False}

    def FINAL(value):
        answer["content"] = value
        answer["ready"] = True
        return value

    user_ns.update(
        answer=answer,
        FINAL=FINAL,
        llm_query=llm_query,
        llm_batch=llm_batch,
        rlm_query=rlm_query,
        rlm_batch=rlm_batch,
        SubCallError=SubCallError,
        SubCallFailure=SubCallFailure,
        __polyrlm_report=lambda: _report(user_ns),
        __polyrlm_state=lambda: _state(user_ns),
    )
    ip = get_ipython()
    ip.events.register("pre_run_cell", _reset_capture)
    _reset_capture()
