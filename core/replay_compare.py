"""Step-by-step comparison of a replay with its record (see :mod:`polyrlm.replay`).

A record that ends early (a killed run) is compared as far as it goes: the
steps it has must match, and what the replay did past its end (more steps,
the end of the run) is not a divergence; the report says where it ends.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from polyrlm.events import AnswerSet, CodeExecuted, Event, ModelCalled, RunFinished, RunStarted
from polyrlm.parsing import extract_blocks
from polyrlm.records import Divergence, ReplayReport, Role
from polyrlm.result import Result
from polyrlm.trajectory import ends_early, record_notes

__all__ = ["compare"]


class _Runs:
    """One side's events grouped by run."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.position = {id(e): n for n, e in enumerate(events, 1)}
        self.started: dict[str, RunStarted] = {}
        self.execs: dict[str, list[CodeExecuted]] = defaultdict(list)
        self.answers: dict[str, AnswerSet] = {}
        self.root_calls: dict[str, list[ModelCalled]] = defaultdict(list)
        self.sub_errors: set[str] = set()  # exec ids with a failed sub-call
        self.finished: dict[str, RunFinished] = {}
        for e in events:
            if isinstance(e, RunStarted):
                self.started[e.run_id] = e
            elif isinstance(e, CodeExecuted):
                self.execs[e.run_id].append(e)
            elif isinstance(e, AnswerSet) and e.exec_id is not None:
                self.answers[e.exec_id] = e
            elif isinstance(e, ModelCalled) and e.role == Role.ROOT:
                self.root_calls[e.run_id].append(e)
            elif isinstance(e, ModelCalled) and e.error is not None and e.exec_id:
                self.sub_errors.add(e.exec_id)
            elif isinstance(e, RunFinished):
                self.finished[e.run_id] = e

    def labels(self) -> dict[str, str]:
        """A readable name per run: ``root``, ``root step 2 child 1``, ..."""
        names: dict[str, str] = {}
        counts: dict[str, int] = defaultdict(int)
        for run_id, start in self.started.items():
            if start.depth == 0 or start.parent_exec_id is None:
                names[run_id] = "root" if start.depth == 0 else f"run {run_id}"
                continue
            parent = names.get(start.parent_run_id or "", "?")
            step = start.parent_exec_id.rsplit("-e", 1)[-1]
            counts[start.parent_exec_id] += 1
            names[run_id] = f"{parent} step {step} child {counts[start.parent_exec_id]}"
        return names


def _code_why(rec: _Runs, run_id: str, step: CodeExecuted) -> str:
    calls = rec.root_calls.get(run_id, [])
    reply = calls[step.iteration - 1] if 0 < step.iteration <= len(calls) else None
    if reply is None or reply.response is None:
        return "the record has no root reply for this turn"
    where = f"line {rec.position[id(reply)]}"
    if step.code.strip() not in [b.code.strip() for b in extract_blocks(reply.response)]:
        return (
            f"the recorded code is not in the model reply recorded for turn {step.iteration} "
            f"({where}): the record was altered"
        )
    return (
        f"the replay ran other code than the reply recorded for turn {step.iteration} gives "
        f"({where}): another backend or fence selection"
    )


def _output_why(rec: _Runs, rep: _Runs, a: CodeExecuted, b: CodeExecuted) -> str:
    if b.exec_id in rep.sub_errors and a.exec_id not in rec.sub_errors:
        return "a sub-call of this step had no recorded reply (its prompt differs from the record)"
    if a.timed_out or b.timed_out:
        return "the block timed out in one of the two runs (a time limit or a slower machine)"
    return (
        "the same code gave another output: the code is not deterministic (time, randomness, "
        "temporary paths), the environment differs, or the recorded output or a recorded "
        "sub-call reply it used was altered"
    )


def _compare_step(
    rec: _Runs, rep: _Runs, run_id: str, label: str, a: CodeExecuted, b: CodeExecuted
) -> list[Divergence]:
    step = f"{label} step {a.exec_id.rsplit('-e', 1)[-1]} (turn {a.iteration})"
    at = rec.position[id(a)]
    if a.code != b.code:
        return [
            Divergence(
                step=step,
                position=at,
                what="code",
                why=_code_why(rec, run_id, a),
                recorded=a.code,
                replayed=b.code,
            )
        ]
    found = []
    for what in ("output", "error"):
        if getattr(a, what) != getattr(b, what):
            found.append(
                Divergence(
                    step=step,
                    position=at,
                    what=what,
                    why=_output_why(rec, rep, a, b),
                    recorded=getattr(a, what),
                    replayed=getattr(b, what),
                )
            )
    set_a, set_b = rec.answers.get(a.exec_id), rep.answers.get(b.exec_id)
    answer_a = set_a.answer if set_a else None
    answer_b = set_b.answer if set_b else None
    if (set_a is None) != (set_b is None) or answer_a != answer_b:
        position = rec.position[id(set_a)] if set_a else at
        why = "the recorded answer was altered, or a sub-call reply it used differs"
        if found:
            why = "this step's output differs too (see above)"
        found.append(
            Divergence(
                step=step,
                position=position,
                what="answer",
                why=why,
                recorded=answer_a,
                replayed=answer_b,
            )
        )
    return found


def _compare_run(
    rec: _Runs, rep: _Runs, rec_id: str, rep_id: str | None, label: str
) -> tuple[int, list[Divergence]]:
    recorded = rec.execs.get(rec_id, [])
    if rep_id is None:
        why = "the replay never started this child run (its parent code took another path)"
        at = rec.position[id(rec.started[rec_id])]
        return 0, [Divergence(step=label, position=at, what="missing", why=why)]
    replayed = rep.execs.get(rep_id, [])
    matching, found = 0, []
    for a, b in zip(recorded, replayed, strict=False):
        step = _compare_step(rec, rep, rec_id, label, a, b)
        matching += not step
        found += step
    if len(recorded) > len(replayed):
        a = recorded[len(replayed)]
        end = rep.finished.get(rep_id)
        why = f"the replay stopped after {len(replayed)} step(s)" + (
            f" ({end.stop_reason}{': ' + end.error if end.error else ''})" if end else ""
        )
        found.append(
            Divergence(
                step=f"{label} step {len(replayed) + 1}",
                position=rec.position[id(a)],
                what="missing",
                why=why,
            )
        )
    elif len(replayed) > len(recorded) and rec_id in rec.finished:  # else: past the record's end
        end_rec = rec.finished[rec_id]
        found.append(
            Divergence(
                step=f"{label} step {len(recorded) + 1}",
                position=rec.position[id(end_rec)],
                what="extra",
                why=f"the replay ran {len(replayed)} steps; the record has {len(recorded)}",
                replayed=replayed[len(recorded)].code,
            )
        )
    return matching, found


def compare(
    recorded: Sequence[Event],
    replayed: Sequence[Event],
    runs: Mapping[str, str],
    notes: Sequence[Divergence],
    result: Result,
) -> ReplayReport:
    """The report of a replay: ``runs`` maps replay run ids to recorded ones;
    ``notes`` are what the book noticed while serving calls."""
    rec, rep = _Runs(recorded), _Runs(replayed)
    back = {recorded_id: replay_id for replay_id, recorded_id in runs.items()}
    labels = rec.labels()
    steps = sum(len(v) for v in rec.execs.values())
    matching, found = 0, list(notes)
    for rec_id in rec.started:
        m, d = _compare_run(rec, rep, rec_id, back.get(rec_id), labels[rec_id])
        matching, found = matching + m, found + d
    root = next(r for r in rec.started.values() if r.depth == 0)
    end = rec.finished.get(root.run_id)
    answer: Any = end.answer if end else None
    # As JSON data, as recorded (a typed answer is an instance in the result).
    end_rep = rep.finished.get(back.get(root.run_id) or "")
    replayed_answer = end_rep.answer if end_rep is not None else result.answer
    if end is not None:  # else the record ends early: no answer or stop reason to compare
        for what, a, b in (
            ("answer", end.answer, replayed_answer),
            ("stop_reason", str(end.stop_reason), str(result.stop_reason)),
        ):
            if a != b:
                found.append(
                    Divergence(
                        step="end",
                        position=rec.position[id(end)],
                        what=what,
                        why=f"the final {what} differs",
                        recorded=a,
                        replayed=b,
                    )
                )
    found.sort(key=lambda d: (d.position is None, d.position or 0))
    return ReplayReport(
        steps=steps,
        matching_steps=matching,
        recorded_answer=answer,
        replayed_answer=replayed_answer,
        recorded_stop_reason=str(end.stop_reason) if end else None,
        replayed_stop_reason=str(result.stop_reason),
        divergences=tuple(found),
        record_ended_early=ends_early(recorded),
        record_lines=len(recorded),
        record_notes=tuple(record_notes(recorded)),
    )
