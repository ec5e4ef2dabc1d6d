"""Training records from trajectories: SFT (one per root turn) and RL (one per run).

* :func:`sft_records`: for each root turn, the conversation up to it and its
  reply: ``{"messages": [system, user, assistant, user, ..., assistant]}``
  (OpenAI's chat fine-tuning JSONL; ``"tools"`` too when the root was offered
  the run_code tool), as the RLM paper trained on root turns.
* :func:`rl_records`: for each run, ``prompt`` (system and question),
  ``completion`` (every reply and the observations between them),
  ``reward`` and what the run was.

Selection, the same for both: a run is exported when it answered (unless
``include_failed``); ``min_score`` keeps the trees whose root run scored at
least that much (a run with no score is dropped); ``children`` adds child
runs (each its own conversation); ``sub_calls`` adds each sub-call of an
exported run as a one-turn record; ``max_input_chars`` (SFT) drops a turn
whose input (every message before its reply) is longer than that.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from polyrlm.errors import ConfigError
from polyrlm.events import Event, ModelCalled
from polyrlm.plugins.export.conversation import Message, Run, message_chars, runs_of
from polyrlm.plugins.export.scores import Scorer, ScoreTable, load_scores
from polyrlm.trajectory import load_trajectory_file

__all__ = [
    "ExportStats",
    "RlRecord",
    "SftRecord",
    "read_runs",
    "rl_records",
    "sft_records",
    "write_jsonl",
]

#: What a typed sub-call's second attempt starts with (its prompt is only the
#: errors of the first reply, not the question): never a record of its own.
SCHEMA_RETRY_PREFIX = "That reply does not validate against the schema: "

Source = str | Path | Sequence[str | Path] | Sequence[Event] | Sequence[Run]
Scores = Scorer | Mapping[str, float | None] | str | Path | None


class SftRecord(BaseModel):
    """One supervised fine-tuning example: a conversation ending in the reply to learn."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: list[dict[str, Any]] = Field(description="system, user, ..., assistant (the reply).")
    tools: list[dict[str, Any]] | None = Field(
        None, description="The tools the model was offered (OpenAI's function format)."
    )

    def line(self) -> str:
        """The record as one JSON line (no ``tools`` key when none were offered)."""
        data: dict[str, Any] = {"messages": self.messages}
        if self.tools:
            data["tools"] = self.tools
        return json.dumps(data, ensure_ascii=False)


class RlRecord(BaseModel):
    """One run (or sub-call) for reinforcement learning: prompt, completion, reward."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: list[dict[str, Any]] = Field(description="The system prompt and the first message.")
    completion: list[dict[str, Any]] = Field(
        description="Every reply and the observations between them, in order."
    )
    reward: float | None = Field(description="The run's score; None when it has none.")
    kind: Literal["run", "sub_call"] = Field(description="A run's turns, or one sub-call.")
    run_id: str = Field(description="The run (for a sub-call: the run whose code made it).")
    parent_run_id: str | None = Field(description="The run that started this child run.")
    depth: int = Field(description="0: a root run; a sub-call: the depth of its model call.")
    call_id: str | None = Field(None, description="A sub-call's id in its trajectory.")
    source: str = Field(description="The trajectory file it came from ('' for events given).")
    backend: str = Field(description="The environment the run's code ran in.")
    model: str = Field(description="The model that wrote the completion.")
    stop_reason: str | None = Field(description="Why the run ended; None: it did not finish.")
    answer: Any = Field(None, description="The run's answer, as recorded.")
    turns: int = Field(description="Replies in the completion.")
    complete: bool = Field(description="False: the run went on past the completion.")
    end: str | None = Field(None, description="Why the completion stops where it does.")
    tools: list[dict[str, Any]] | None = Field(None, description="The tools the model was offered.")

    def line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False)


@dataclass
class ExportStats:
    """What an export read, kept and dropped (and why), for its summary."""

    files: int = 0
    runs: int = 0
    records: int = 0
    #: Runs (or turns, sub-calls) left out, by reason.
    skipped: Counter[str] = field(default_factory=Counter)
    #: Sentences on records that end early or conversations that stop early.
    notes: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        lines = [f"read {self.runs} runs from {self.files} file(s)"]
        lines += [f"skipped {n}: {reason}" for reason, n in sorted(self.skipped.items())]
        return lines + self.notes


def _trajectory_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.jsonl") if p.is_file() and p.name[:1] != ".")
        if not files:
            raise ConfigError(f"{str(path)!r} holds no trajectory (*.jsonl)")
        return files
    if not path.exists():
        raise ConfigError(f"{str(path)!r}: no such file or directory")
    return [path]


def read_runs(
    paths: str | Path | Sequence[str | Path], stats: ExportStats | None = None
) -> list[Run]:
    """The runs of trajectory files and directories of them (``*.jsonl``, in
    name order), in the order given."""
    stats = stats if stats is not None else ExportStats()
    given = [paths] if isinstance(paths, str | Path) else list(paths)
    if not given:
        raise ConfigError("no trajectory given")
    runs: list[Run] = []
    for item in given:
        for file in _trajectory_files(Path(item)):
            record = load_trajectory_file(file)
            stats.files += 1
            stats.notes += [f"{file}: {note}" for note in record.notes()]
            runs += runs_of(record.events, str(file))
    return runs


def _runs(source: Source, stats: ExportStats) -> list[Run]:
    if isinstance(source, str | Path):
        return read_runs(source, stats)
    items = list(source)
    if items and all(isinstance(item, Run) for item in items):
        return list(items)  # type: ignore[arg-type]
    if items and all(isinstance(item, str | Path) for item in items):
        return read_runs(items, stats)  # type: ignore[arg-type]
    return runs_of(items)  # type: ignore[arg-type]


def _scorer(scores: Scores, runs: Sequence[Run]) -> Scorer | None:
    if scores is None:
        return None
    if isinstance(scores, str | Path):
        scores = load_scores(scores)
    elif isinstance(scores, Mapping):
        scores = ScoreTable(scores)
    if isinstance(scores, ScoreTable):
        scores.check_names(sorted({r.source for r in runs if r.source}))
    return scores


def _selected(
    source: Source,
    scores: Scores,
    min_score: float | None,
    children: bool,
    include_failed: bool,
    stats: ExportStats,
) -> list[tuple[Run, float | None]]:
    """The runs to export, tree by tree (root first), each with its score."""
    runs = _runs(source, stats)
    scorer = _scorer(scores, runs)
    if min_score is not None and scorer is None:
        raise ConfigError("a minimum score needs scores (--scores, or --reward-task)")
    stats.runs += len(runs)
    trees: dict[str, list[Run]] = {}
    for run in runs:
        trees.setdefault(f"{run.source}\0{run.root_id}", []).append(run)
    chosen: list[tuple[Run, float | None]] = []
    for tree in trees.values():
        root = tree[0]
        score = scorer(root) if scorer is not None and root.depth == 0 else None
        if min_score is not None and (score is None or score < min_score):
            reason = "runs with no score" if score is None else f"runs scoring below {min_score:g}"
            stats.skipped[reason] += len(tree) if children else 1
            continue
        for run in tree if children else tree[:1]:
            if run.depth and not children:
                continue
            if not include_failed and not run.answered:
                stats.skipped["runs without an answer (--include-failed-runs keeps them)"] += 1
                continue
            if not run.replies:
                stats.skipped["runs without a whole turn"] += 1
                continue
            if run.end is not None:
                stats.notes.append(f"run {run.run_id}: {run.end}")
            reward = score if run is root else (scorer(run) if scorer is not None else None)
            chosen.append((run, reward))
    return chosen


def _sub_calls(run: Run, stats: ExportStats) -> Iterable[ModelCalled]:
    for call in run.sub_calls:
        if call.response is None:
            stats.skipped["sub-calls that failed"] += 1
        elif call.prompt.startswith(SCHEMA_RETRY_PREFIX):
            stats.skipped["typed sub-calls asked again (their prompt is only the errors)"] += 1
        else:
            yield call


def _pair(call: ModelCalled) -> tuple[Message, Message]:
    return {"role": "user", "content": call.prompt}, {
        "role": "assistant",
        "content": call.response or "",
    }


def _weighted(messages: list[Message]) -> list[Message]:
    """Earlier replies marked ``"weight": 0`` (OpenAI's key): only the last is learnt."""
    last = len(messages) - 1
    return [
        {**m, "weight": 0} if m["role"] == "assistant" and i < last else m
        for i, m in enumerate(messages)
    ]


def sft_records(
    source: Source,
    *,
    scores: Scores = None,
    min_score: float | None = None,
    max_input_chars: int | None = None,
    children: bool = False,
    sub_calls: bool = False,
    include_failed: bool = False,
    weight_last: bool = False,
    stats: ExportStats | None = None,
) -> list[SftRecord]:
    """One record per root turn of the selected runs (see the module's description);
    ``weight_last`` marks earlier replies ``"weight": 0`` (OpenAI trains on the last only)."""
    if max_input_chars is not None and max_input_chars < 1:
        raise ConfigError(f"bad --max-input-chars {max_input_chars}: must be at least 1")
    stats = stats if stats is not None else ExportStats()
    records: list[SftRecord] = []

    def add(messages: list[Message], tools: list[dict[str, Any]] | None) -> None:
        if max_input_chars is not None and sum(map(message_chars, messages[:-1])) > max_input_chars:
            stats.skipped[f"turns whose input exceeds {max_input_chars:,} characters"] += 1
            return
        shown = _weighted(messages) if weight_last else messages
        records.append(SftRecord(messages=shown, tools=tools))

    for run, _ in _selected(source, scores, min_score, children, include_failed, stats):
        for reply in run.replies:
            add(run.messages[: reply + 1], run.tools)
        if sub_calls:
            for call in _sub_calls(run, stats):
                add(list(_pair(call)), None)
    stats.records += len(records)
    return records


def rl_records(
    source: Source,
    *,
    scores: Scores = None,
    min_score: float | None = None,
    children: bool = False,
    sub_calls: bool = False,
    include_failed: bool = False,
    stats: ExportStats | None = None,
) -> list[RlRecord]:
    """One record per selected run, and per sub-call with ``sub_calls`` (reward None)."""
    stats = stats if stats is not None else ExportStats()
    records: list[RlRecord] = []
    for run, reward in _selected(source, scores, min_score, children, include_failed, stats):
        common = {
            "run_id": run.run_id,
            "parent_run_id": run.parent_run_id,
            "source": run.source,
            "backend": run.backend,
            "stop_reason": run.stop_reason,
            "answer": run.answer,
        }
        records.append(
            RlRecord(
                prompt=run.messages[:2],
                completion=run.messages[2:],
                reward=reward,
                kind="run",
                depth=run.depth,
                model=run.model,
                turns=len(run.replies),
                complete=run.complete,
                end=run.end,
                tools=run.tools,
                **common,
            )
        )
        if sub_calls:
            for call in _sub_calls(run, stats):
                user, assistant = _pair(call)
                records.append(
                    RlRecord(
                        prompt=[user],
                        completion=[assistant],
                        reward=None,
                        kind="sub_call",
                        depth=call.depth,
                        call_id=call.call_id,
                        model=call.model,
                        turns=1,
                        complete=True,
                        **common,
                    )
                )
    stats.records += len(records)
    return records


def write_jsonl(records: Iterable[SftRecord | RlRecord], out: str | Path | IO[str]) -> int:
    """Write ``records`` as JSON lines to a path or an open text stream; returns how many."""
    lines = [record.line() + "\n" for record in records]
    if isinstance(out, str | Path):
        with Path(out).open("w", encoding="utf-8") as fh:
            fh.writelines(lines)
    else:
        out.writelines(lines)
    return len(lines)
