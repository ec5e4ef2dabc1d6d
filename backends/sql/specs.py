"""The public SQL functions (``llm()``, ``rlm()``, ``final()``) as the
guide documents them, and the macros that give them their overloads over
the hidden UDFs of :mod:`polyrlm.backends.sql.functions`."""

from __future__ import annotations

from dataclasses import dataclass

from polyrlm.backends.sql.sources import HIDDEN_PREFIX

__all__ = ["FUNCTIONS", "FunctionSpec", "udf_name"]


@dataclass(frozen=True)
class FunctionSpec:
    """One public SQL function, as the guide documents it."""

    name: str
    signatures: tuple[str, ...]
    doc: str
    #: ``CREATE MACRO`` body (after ``name``) calling the hidden UDF.
    macro: str


def udf_name(name: str) -> str:
    """The hidden UDF behind the public function ``name``."""
    return f"{HIDDEN_PREFIX}_{name}"


_TEXT = "CAST({} AS VARCHAR)"
_NULL = "CAST(NULL AS VARCHAR)"
#: A schema given as a STRUCT or MAP becomes its JSON; anything else its text.
_SCHEMA = (
    "CASE WHEN typeof({x}) LIKE 'STRUCT%' OR typeof({x}) LIKE 'MAP%' "
    "THEN CAST(to_json({x}) AS VARCHAR) ELSE CAST({x} AS VARCHAR) END"
)

#: What the backend offers the model's SQL; the guide is generated from these.
FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec(
        name="llm",
        signatures=(
            "llm(prompt) -> VARCHAR",
            "llm(prompt, model) -> VARCHAR",
            "llm(prompt, schema) -> VARCHAR",
            "llm(prompt, model, schema) -> VARCHAR",
        ),
        doc=(
            "a sub-model's reply (llm_query and llm_batch in one). Vectorised: the rows of a "
            "query are sent concurrently, in "
            "batches of up to 2,048 rows, and the replies come back in row order. The sub-model "
            "is strong and has a large window (hand it up to ~100,000 characters per prompt), "
            "but each call costs time and money: prefer few large prompts. A NULL prompt gives "
            "NULL with no call; a failed call gives NULL and is reported under the result. "
            "`model` picks another sub-model (NULL: the default). A typed call: `schema` is a "
            "JSON Schema (JSON text starting with {, or a STRUCT): the reply, checked on the "
            "host (a reply that does not fit is asked for again, then fails: NULL), comes back "
            "as JSON text; read it with ->> or json_extract_string(reply, "
            "'$.key'), e.g. llm('Who wrote this? ' || body, "
            '\'{"type": "object", "properties": {"author": {"type": "string"}}}\')'
            "->>'author'."
        ),
        macro=(
            f"(prompt) AS {udf_name('llm')}({_TEXT.format('prompt')}, {_NULL}, {_NULL}), "
            f"(prompt, model_or_schema) AS {udf_name('llm')}({_TEXT.format('prompt')}, "
            f"{_SCHEMA.format(x='model_or_schema')}, {_NULL}), "
            f"(prompt, model, schema) AS {udf_name('llm')}({_TEXT.format('prompt')}, "
            f"{_TEXT.format('model')}, {_SCHEMA.format(x='schema')})"
        ),
    ),
    FunctionSpec(
        name="rlm",
        signatures=("rlm(prompt) -> VARCHAR", "rlm(prompt, context) -> VARCHAR"),
        doc=(
            "like llm(), but each call is a recursive language model with a database of its "
            "own over `context` (text becomes its table of lines, a list its documents, a "
            "struct its named tables); without a context the prompt is the context. At the "
            "depth limit it is a plain sub-model call. Rows run concurrently; a failure gives "
            "NULL."
        ),
        macro=(
            f"(prompt) AS {udf_name('rlm')}({_TEXT.format('prompt')}, {_NULL}), "
            f"(prompt, context) AS {udf_name('rlm')}({_TEXT.format('prompt')}, "
            f"{_TEXT.format('to_json(context)')})"
        ),
    ),
    FunctionSpec(
        name="final",
        signatures=("final(value) -> VARCHAR",),
        doc=(
            "sets the answer when the statement succeeds (text stays text; numbers, lists and "
            "structs keep their type), and the run ends. Call it on exactly one row: over "
            "several rows it fails, so aggregate first (string_agg, list, count). final(NULL) "
            "fails too."
        ),
        macro=f"(value) AS {udf_name('final')}({_TEXT.format('to_json(value)')})",
    ),
)
