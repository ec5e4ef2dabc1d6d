"""Typed answers: the declared type of a run's answer, checked on the host.

``RLM(...).completion(question, context, answer_type=T)`` takes a pydantic
model, any type pydantic validates (``list[Person]``, ``dict[str, int]``)
or a JSON Schema (a dict). Every answer is checked against the JSON Schema
(``jsonschema``), then built by pydantic when a type was declared. The environment's
guide shows the type to the root in its own language; the answer the code
sets is validated here, and a value that does not validate goes back to the
model as an observation listing what is wrong (within the iteration budget).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from polyrlm.errors import ConfigError
from polyrlm.schema_text import compact_json, python_declarations

__all__ = [
    "ANSWER_ERRORS_SHOWN",
    "ANSWER_ERROR_CHARS",
    "AnswerInvalid",
    "AnswerType",
    "as_answer_type",
    "decode_json_text",
]

#: Validation errors shown to the model per rejected answer.
ANSWER_ERRORS_SHOWN = 10
#: Characters of one validation error shown to the model.
ANSWER_ERROR_CHARS = 300


class AnswerInvalid(ValueError):
    """The answer does not validate; ``errors`` lists why (one line each)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def decode_json_text(value: Any, schema: Mapping[str, Any]) -> Any:
    """A text that holds JSON, decoded, unless the schema wants a string:
    Bash and SQL answers are text, and a model often sets JSON as text."""
    if not isinstance(value, str) or schema.get("type") == "string":
        return value
    text = value.strip()
    if text.startswith("```"):  # a fenced JSON block
        text = text.strip("`").removeprefix("json").strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    # JSON with prose around it (a sub-model's reply): the outermost object or list.
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        start = min(starts)
        end = text.rfind("}" if text[start] == "{" else "]")
        if end > start:
            try:
                return json.loads(text[start : end + 1])
            except ValueError:
                pass
    return value


def _location(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(the answer)"


def _cut(text: str) -> str:
    return text if len(text) <= ANSWER_ERROR_CHARS else text[:ANSWER_ERROR_CHARS] + " ..."


class AnswerType:
    """A declared answer type: its JSON Schema, how to show it, how to check it."""

    def __init__(self, declared: Any) -> None:
        self.declared = declared
        self._adapter: TypeAdapter[Any] | None = None
        if isinstance(declared, Mapping):
            schema = dict(declared)
        else:
            try:
                self._adapter = TypeAdapter(declared)
                schema = self._adapter.json_schema()
            except Exception as exc:  # pydantic cannot make a schema of it
                raise ConfigError(
                    f"answer_type {declared!r} is not a type pydantic can check: {exc}"
                ) from None
        import jsonschema

        try:
            validator_class = jsonschema.validators.validator_for(schema)
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ConfigError(
                f"the answer schema is not a valid JSON Schema: {exc.message}"
            ) from None
        self._validator = validator_class(schema)
        self.schema: dict[str, Any] = schema
        self.declarations, self.annotation = python_declarations(self.schema)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from what was declared (a batch sends it to worker processes).
        return (AnswerType, (self.declared,))

    @property
    def is_text(self) -> bool:
        """True when the answer is a plain string (nothing to decode)."""
        return self.schema.get("type") == "string"

    def json_text(self) -> str:
        """The schema as one line of JSON, for a prompt."""
        return compact_json(self.schema)

    def python_text(self) -> str:
        """The type as Python: ``TypedDict`` declarations and an annotation."""
        head = f"{self.declarations}\n" if self.declarations else ""
        return f"{head}answer type: {self.annotation}"

    def validate(self, value: Any) -> Any:
        """The answer as the declared type (a pydantic instance for a model,
        plain JSON data for a JSON Schema); raises :class:`AnswerInvalid`.

        The JSON Schema is checked first, for every declared type: its
        errors are what the model is told, and a replay, which has only the
        recorded schema, comes to the same verdict with the same words.
        Pydantic then builds the instance (its own errors are told when its
        validators refuse what the schema allowed)."""
        value = decode_json_text(value, self.schema)
        found = sorted(self._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if found:
            errors = [_cut(f"{_location(e.absolute_path)}: {e.message}") for e in found]
            raise AnswerInvalid(errors[:ANSWER_ERRORS_SHOWN])
        if self._adapter is None:
            return value
        try:
            return self._adapter.validate_python(value)
        except ValidationError as exc:
            errors = [
                _cut(f"{_location(e['loc'])}: {e['msg']} (got {e.get('input')!r})")
                for e in exc.errors(include_url=False)
            ]
            raise AnswerInvalid(errors[:ANSWER_ERRORS_SHOWN]) from None

    def dump(self, answer: Any) -> Any:
        """A validated answer as JSON data (what a trajectory records)."""
        if self._adapter is None:
            return answer
        return self._adapter.dump_python(answer, mode="json")


def as_answer_type(declared: Any) -> AnswerType | None:
    """``declared`` as an :class:`AnswerType` (None stays None)."""
    if declared is None or isinstance(declared, AnswerType):
        return declared
    return AnswerType(declared)
