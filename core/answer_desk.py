"""Where a loop takes the answers its code sets (see :mod:`polyrlm.answers`).

Each answer set is recorded (``answer_set``). In a typed root run it is
validated first: one that does not validate is recorded as such, told to the
model with the errors (an observation, within the iteration budget) and not
checked again until it changes; an accepted one is an instance of the type
(``Result.answer``), recorded as the JSON data the code set (decoded when it
was JSON text): a replay, which has only the recorded JSON Schema, records
the very same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from polyrlm.answers import AnswerInvalid, AnswerType, decode_json_text
from polyrlm.events import AnswerSet, Event
from polyrlm.prompts import ANSWER_INVALID_NOTE, ANSWER_STILL_INVALID_NOTE
from polyrlm.records import ExecResult

__all__ = ["AnswerDesk"]


class AnswerDesk:
    """The answers of one loop (``answer_type`` None: any answer is taken)."""

    def __init__(
        self, answer_type: AnswerType | None, emit: Callable[[Event], None], run_id: str
    ) -> None:
        self.answer_type = answer_type
        self.emit = emit
        self.run_id = run_id
        #: The answer accepted (an instance of the type, when typed).
        self.accepted: Any = None
        #: The accepted answer as the code set it (JSON data), when typed.
        self._raw: Any = None
        self._typed = False
        #: The last answer that did not validate, as JSON.
        self._rejected: str | None = None

    def take(self, result: ExecResult, exec_id: str | None) -> tuple[bool, str]:
        """Whether the block set an answer the run accepts, and a note for the model."""
        if not result.answer_ready:
            return False, ""
        if self.answer_type is None:
            self.accepted = result.answer
            self.emit(AnswerSet(run_id=self.run_id, exec_id=exec_id, answer=result.answer))
            return True, ""
        shown = json.dumps(result.answer, sort_keys=True, default=str)
        if shown == self._rejected:
            return False, ANSWER_STILL_INVALID_NOTE
        try:
            self._accept(result.answer)
        except AnswerInvalid as exc:
            self._rejected = shown
            self.emit(
                AnswerSet(
                    run_id=self.run_id,
                    exec_id=exec_id,
                    answer=result.answer,
                    valid=False,
                    errors=exc.errors,
                )
            )
            listed = "\n".join(f"- {e}" for e in exc.errors)
            return False, ANSWER_INVALID_NOTE.format(errors=listed)
        self.emit(
            AnswerSet(run_id=self.run_id, exec_id=exec_id, answer=self.recorded(self.accepted))
        )
        return True, ""

    def partial(self, answer: Any) -> Any:
        """A partial answer (the run stopped): an instance if it validates, else as it is."""
        if self.answer_type is None or answer is None:
            return answer
        try:
            self._accept(answer)
        except AnswerInvalid:
            return answer
        return self.accepted

    def _accept(self, answer: Any) -> None:
        assert self.answer_type is not None
        raw = decode_json_text(answer, self.answer_type.schema)
        self.accepted = self.answer_type.validate(raw)
        self._raw, self._typed = raw, True

    def recorded(self, answer: Any) -> Any:
        """The answer as JSON data, for the record (a typed one as it was set)."""
        if self._typed and answer is self.accepted:
            return self._raw
        return answer
