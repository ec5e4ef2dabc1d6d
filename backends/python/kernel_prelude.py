# Runs inside the Jupyter kernel, once per kernel start, after the bridge
# client's source (so llm_query, call_tool & co. are defined in this namespace). The
# host fills in the __POLYRLM_*__ limits. Standard library only; it must not
# import polyrlm: nothing of the host's package or memory comes in. The host
# ships polyrlm.pycell's source first, as the module _polyrlm_pycell.
#
# The caps here keep an honest flood off the wire (the model's output, its
# displays, its error texts); they are a courtesy, not the guarantee: the
# model's code can undo them, and the host caps everything again
# (polyrlm.backends.python.kernel_io) and checks every report
# (polyrlm.backends.python.kernel_report).
# ruff: noqa
import json as _json
import sys as _sys

import _polyrlm_pycell as _pycell

_cap = _pycell.Capped(__POLYRLM_CAPTURE_LIMIT__)
_ANSWER_MAX = __POLYRLM_ANSWER_MAX_CHARS__
_MAX_VARIABLES = __POLYRLM_MAX_VARIABLES__
_NAME_MAX = __POLYRLM_NAME_MAX_CHARS__
#: Characters sent in one stream message at most (a message has a size cap).
_CHUNK = 1_000_000


class _Text:
    """An object whose repr is its text: a report comes back as the JSON
    itself (text/plain of a user expression), not as the repr of a str."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text

    __str__ = __repr__


def _cap_stream(stream):
    """Route the stream's write (print, and the fd watcher's copy of what
    the process writes to fds 1 and 2) through the per-cell cap. Done at
    every cell's start: IPython patches ``write`` for the cell (its output
    history) and puts the old one back after it; this wraps the outermost,
    so what is dropped is not kept in the kernel either."""
    inner = getattr(stream.write, "_polyrlm_inner", stream.write)

    def write(text):
        if not isinstance(text, str):
            return inner(text)  # its own TypeError
        piece = _cap.take(text)
        while piece:
            inner(piece[:_CHUNK])
            piece = piece[_CHUNK:]
            if piece:
                stream.flush()
        return len(text)

    write._polyrlm_inner = inner
    stream.write = write


def _take_display(text):
    """A display's text as the cap lets it through (one message: at most
    _CHUNK characters), without the newline the host adds after it."""
    text = str(text)
    _cap.dropped += max(len(text) - _CHUNK, 0)
    piece = _cap.take(text[:_CHUNK] + "\n")
    return piece[:-1] if piece.endswith("\n") else piece


def _cap_display(ip):
    """Only text/plain is computed and sent, capped."""
    ip.display_formatter.active_types = ["text/plain"]
    publish = ip.display_pub.publish

    def capped_publish(data, *args, **kwargs):
        piece = _take_display(data.get("text/plain", "") if isinstance(data, dict) else "")
        if piece or _cap.kept < _cap.limit:
            publish({"text/plain": piece}, *args, **kwargs)

    ip.display_pub.publish = capped_publish
    write_format_data = ip.displayhook.write_format_data

    def capped_format(format_dict, md_dict=None):
        text = _take_display(format_dict.get("text/plain", ""))
        return write_format_data({"text/plain": text}, md_dict)

    ip.displayhook.write_format_data = capped_format


def _cut(text):
    limit = _cap.limit
    return (
        text if len(text) <= limit else text[:limit] + f"\n[cut: {len(text) - limit:,} characters]"
    )


def _cap_errors(ip):
    """A huge exception text is cut before it is sent (error and reply)."""
    show = ip._showtraceback

    def capped_show(etype, evalue, stb):
        return show(etype, _Text(_cut(str(evalue))), [_cut("\n".join(map(str, stb)))])

    ip._showtraceback = capped_show

    def cut_result(result):
        err = result.error_in_exec
        if err is None:
            return
        try:
            if len(str(err)) > _cap.limit:
                err.args = (_cut(str(err)),)
                if len(str(err)) > _cap.limit:
                    result.error_in_exec = RuntimeError(_cut(str(err)))
        except Exception:
            result.error_in_exec = RuntimeError(
                f"{type(err).__name__} (its text could not be read)"
            )

    ip.events.register("post_run_cell", cut_result)


#: File names of the modules the host ships in (pycell, this one): their
#: frames are plumbing (a tool call, a sub-call), noise in the model's traceback.
_PLUMBING = "<_polyrlm"


def _trim(tb):
    """Cut ``tb`` at its first plumbing frame: the model sees its own call."""
    previous, current = None, tb
    while current is not None:
        if current.tb_frame.f_code.co_filename.startswith(_PLUMBING):
            if previous is not None:
                previous.tb_next = None
            break
        previous, current = current, current.tb_next
    return tb


def _hide_plumbing(ip):
    """Tracebacks leave out the frames of the shipped modules (the error
    text, say a tool's, stays whole), also those of chained exceptions."""
    formatter = ip.InteractiveTB
    inner = formatter.structured_traceback

    def structured_traceback(etype, evalue, etb=None, *args, **kwargs):
        seen, exc = set(), evalue
        while isinstance(exc, BaseException) and id(exc) not in seen:
            seen.add(id(exc))
            _trim(exc.__traceback__)
            exc = exc.__cause__ or exc.__context__
        return inner(etype, evalue, _trim(etb), *args, **kwargs)

    formatter.structured_traceback = structured_traceback


def _reset_capture(*_args):
    _cap.reset()
    for name in ("stdout", "stderr"):
        _cap_stream(getattr(_sys, name))


# What the model is given, and IPython's own names: not the model's variables.
_HIDDEN = {*_pycell.PROVIDED, "open", "In", "Out", "exit", "quit", "get_ipython"}


def _report(user_ns):
    ready, content = _pycell.read_answer(user_ns)
    report = {"ready": ready, "answer": content, "dropped": _cap.dropped}
    text = _json.dumps(report)
    if len(text) > _ANSWER_MAX:
        text = _json.dumps({**report, "answer": None, "oversize": len(text)})
    return _Text(text)


def _state(user_ns):
    listed = _pycell.list_variables(user_ns, _HIDDEN, _MAX_VARIABLES)
    rows = [{"name": n[:_NAME_MAX], "type": t[:_NAME_MAX], "size": s} for n, t, s in listed]
    return _Text(_json.dumps(rows))


def helpers(user_ns):
    """(Re)bind the report helpers; the host calls this when a report came
    back unreadable (the model rebound or deleted them)."""
    user_ns.update(
        __polyrlm_report=lambda: _report(user_ns),
        __polyrlm_state=lambda: _state(user_ns),
    )


def _install(user_ns, tool_specs=()):
    """The model's names: sub-calls taking ``schema=``, and a function per
    user tool (its spec from the host) that forwards named arguments over
    the bridge: the tool runs on the host."""
    query, batch = _pycell.sub_functions(llm_query, llm_batch, SubCallFailure)
    _pycell.provide(
        user_ns,
        llm_query=query,
        llm_batch=batch,
        rlm_query=rlm_query,
        rlm_batch=rlm_batch,
        SubCallError=SubCallError,
        SubCallFailure=SubCallFailure,
        tools=_pycell.tool_functions(tool_specs, call_tool),
    )
    helpers(user_ns)
    ip = get_ipython()
    _cap_display(ip)
    _cap_errors(ip)
    _hide_plumbing(ip)
    ip.events.register("pre_run_cell", _reset_capture)
    _reset_capture()
