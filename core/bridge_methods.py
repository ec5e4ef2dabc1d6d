"""What a bridge request asks of the environment's :class:`SubCalls`.

The bridge (:mod:`polyrlm.bridge`) carries JSON lines and bounds what a
client may cost; this module says what each method means. Methods:

* ``llm_query`` (``prompt``, ``model``, ``schema``) and ``llm_batch``
  (``prompts``, ``model``, ``schema``): a ``schema`` makes them typed, and
  JSON data comes back instead of text;
* ``rlm_query`` (``prompt``, ``context``) and ``rlm_batch`` (``prompts``,
  ``contexts``);
* the user tools' ``call_tool`` (``name``, ``arguments``) and
  ``call_tools`` (``name``, a list of ``arguments``).

A batch replies ``{"result": [...], "failures": {"index": "why"}}``; the
others ``{"result": ...}``. A malformed request raises :class:`BadRequest`.
"""

from __future__ import annotations

from typing import Any

from polyrlm.environment import SubCallFailure, SubCalls

__all__ = ["BadRequest", "serve"]


class BadRequest(Exception):
    """The request is malformed (its reply is a ``BadRequest`` error)."""


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, not {type(value).__name__}")
    return value


def _texts(value: Any, name: str) -> list[str]:
    if not isinstance(value, list):
        raise BadRequest(f"{name} must be a list of strings")
    return [_text(v, f"{name}[{i}]") for i, v in enumerate(value)]


def _model_and_schema(params: dict[str, Any]) -> tuple[Any, ...]:
    """The trailing arguments of a sub-model call: the model, and the schema
    only when there is one (SubCalls from before typed calls still serve an
    untyped call)."""
    model = params.get("model")
    model = None if model is None else _text(model, "model")
    schema = params.get("schema")
    if schema is None:
        return (model,)
    if not isinstance(schema, dict):
        raise BadRequest("schema must be a JSON Schema object")
    return (model, schema)


def _batch(items: list[Any]) -> dict[str, Any]:
    failures = {str(i): x.error for i, x in enumerate(items) if isinstance(x, SubCallFailure)}
    # Text stays text (a str subclass becomes plain); typed replies are JSON data.
    return {"result": [str(x) if isinstance(x, str) else x for x in items], "failures": failures}


def serve(sc: SubCalls, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The reply to one request (its ``id`` is added by the bridge)."""
    if method == "llm_query":
        return {
            "result": sc.llm_query(
                _text(params.get("prompt"), "prompt"), *_model_and_schema(params)
            )
        }
    if method == "llm_batch":
        prompts = _texts(params.get("prompts"), "prompts")
        return _batch(sc.llm_batch(prompts, *_model_and_schema(params)))
    if method == "rlm_query":
        return {
            "result": sc.rlm_query(_text(params.get("prompt"), "prompt"), params.get("context"))
        }
    if method == "rlm_batch":
        contexts = params.get("contexts")
        if contexts is not None and not isinstance(contexts, list):
            raise BadRequest("contexts must be a list")
        return _batch(sc.rlm_batch(_texts(params.get("prompts"), "prompts"), contexts))
    if method == "call_tool":
        name = _text(params.get("name"), "name")
        return {"result": sc.call_tool(name, params.get("arguments") or {})}
    if method == "call_tools":
        listed = params.get("arguments")
        if not isinstance(listed, list):
            raise BadRequest("arguments must be a list (one object per call)")
        return {"result": sc.call_tools(_text(params.get("name"), "name"), listed)}
    raise BadRequest(f"unknown method {method!r}")
