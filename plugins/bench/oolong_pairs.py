"""``oolong-pairs``: every pair of users that satisfies conditions over the
inferred labels (the RLM paper's OOLONG-Pairs), scored by F1 over the pairs.

The records are those of ``oolong``, with fewer users so each has several.
A condition on a user is a conjunction of one or two predicates over that
user's labelled questions: has one of type L, has none of type L, has
exactly k of type L, or has some of type L and all of them after a date.
The query asks for the pairs where both users satisfy P, or where one
satisfies P and the other Q. The answer can only be had by listing: the
pairs depend on each user's own labels, and when P and Q overlap a pair is
not |P| x |Q| (so no inclusion-exclusion over counts gives it).
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from typing import Any, ClassVar

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.plugins.bench.oolong import LABEL_MAP, PREAMBLE, label_params, records_context
from polyrlm.plugins.bench.oolong_data import (
    DATE_FORMAT,
    FIRST_DAY,
    LABELS,
    SPAN_DAYS,
    make_records,
)
from polyrlm.plugins.bench.scoring import pairs_f1
from polyrlm.plugins.bench.strategy import MAP_REDUCE, Strategy
from polyrlm.plugins.bench.task import Instance, Task

__all__ = [
    "PAIRS_MAX_GOLD",
    "PAIRS_MAX_TOKENS",
    "PAIRS_MIN_TOKENS",
    "PAIRS_RECORDS_PER_USER",
    "PAIR_MAP",
    "Condition",
    "OolongPairsTask",
]

#: Smallest and largest contexts, in tokens.
PAIRS_MIN_TOKENS = 2_000
PAIRS_MAX_TOKENS = 262_144
#: Records per user ID, on average.
PAIRS_RECORDS_PER_USER = 10
#: Most pairs a generated answer may list (a query over more is redrawn).
PAIRS_MAX_GOLD = 5_000
#: Queries drawn before giving up on a non-trivial one.
_MAX_DRAWS = 500
_RECORD_CHARS = 85

#: One predicate: (op, label, argument); op is has, none, count (argument k)
#: or after (argument an ISO date). A condition is a tuple of predicates.
Predicate = tuple[str, str, Any]
Condition = tuple[Predicate, ...]

_PAIRS_PY = """\
import datetime as dt
from collections import defaultdict
seen = defaultdict(lambda: defaultdict(list))
for (d, u, _), f in zip(recs, found):
    seen[int(u)]
    if f:
        seen[int(u)][f].append(dt.datetime.strptime(d, "%b %d, %Y").date())
def holds(u, cond):
    for op, label, arg in cond:
        days = seen[u][label]
        if op == "has" and not days: return False
        if op == "none" and days: return False
        if op == "count" and len(days) != arg: return False
        if op == "after" and (not days or min(days) <= dt.date.fromisoformat(arg)): return False
    return True
users = sorted(seen)
p_cond, q_cond = <<cond_p>>, <<cond_q>>
P = {u for u in users if holds(u, p_cond)}
Q = P if q_cond is None else {u for u in users if holds(u, q_cond)}
pairs = sorted({(min(a, b), max(a, b)) for a in P for b in Q if a != b})
print(len(P), len(Q), len(pairs))
FINAL([list(x) for x in pairs])"""

_PAIRS_SQL = """\
CREATE TABLE stats AS SELECT usr, <<sql_stats:raw>> FROM labelled GROUP BY usr;
SELECT final(coalesce(string_agg('(' || a.usr || ', ' || b.usr || ')', chr(10)
                                 ORDER BY a.usr, b.usr), ''))
FROM stats a JOIN stats b ON a.usr < b.usr
WHERE (<<sql_p_a:raw>> AND <<sql_q_b:raw>>) OR (<<sql_p_b:raw>> AND <<sql_q_a:raw>>);"""

#: Label every record through the sub-model, then list the pairs with code.
PAIR_MAP = Strategy(
    name="label-map",
    description="label every record with the sub-model, then evaluate the conditions per "
    "user and list the pairs with code",
    code={
        "python": (LABEL_MAP.code["python"][0], _PAIRS_PY),
        "sql": (LABEL_MAP.code["sql"][0], _PAIRS_SQL),
    },
    needs_sub_model=True,
    note="knows the question's structure",
)


def _column(label: str) -> str:
    return label.replace(" ", "_")


def _describe(pred: Predicate) -> str:
    op, label, arg = pred
    if op == "has":
        return f"at least one question of type '{label}'"
    if op == "none":
        return f"no question of type '{label}'"
    if op == "count":
        return f"exactly {arg} question{'s' if arg != 1 else ''} of type '{label}'"
    day = dt.date.fromisoformat(arg).strftime(DATE_FORMAT)
    return f"at least one question of type '{label}', all of them dated after {day}"


def _sql(cond: Condition, alias: str) -> str:
    parts = []
    for op, label, arg in cond:
        n, first = f"{alias}.n_{_column(label)}", f"{alias}.first_{_column(label)}"
        if op == "has":
            parts.append(f"{n} >= 1")
        elif op == "none":
            parts.append(f"{n} = 0")
        elif op == "count":
            parts.append(f"{n} = {int(arg)}")
        else:
            parts.append(f"({n} >= 1 AND {first} > DATE '{arg}')")
    return "(" + " AND ".join(parts) + ")"


def _holds(days: dict[str, list[dt.date]], cond: Condition) -> bool:
    for op, label, arg in cond:
        got = days.get(label, [])
        if (
            (op == "has" and not got)
            or (op == "none" and got)
            or (op == "count" and len(got) != arg)
            or (op == "after" and (not got or min(got) <= dt.date.fromisoformat(arg)))
        ):
            return False
    return True


def _draw_condition(rng: random.Random) -> Condition:
    preds: list[Predicate] = []
    for label in rng.sample(LABELS, rng.choice((1, 2))):
        op = rng.choice(("has", "has", "none", "count", "after"))
        if op == "count":
            preds.append((op, label, rng.randint(1, 3)))
        elif op == "after":
            day = FIRST_DAY + dt.timedelta(days=rng.randrange(SPAN_DAYS // 5, SPAN_DAYS // 2))
            preds.append((op, label, day.isoformat()))
        else:
            preds.append((op, label, None))
    return tuple(preds)


class OolongPairsTask(Task):
    """Pairs of users whose inferred labels satisfy conditions; F1 over pairs."""

    name: ClassVar[str] = "oolong-pairs"
    description: ClassVar[str] = "pairs of user IDs meeting conditions over inferred labels; F1"
    metric: ClassVar[str] = "F1 over pairs"
    default_sizes: ClassVar[tuple[int, ...]] = (8_192, 32_768)
    min_size: ClassVar[int] = PAIRS_MIN_TOKENS
    max_size: ClassVar[int] = PAIRS_MAX_TOKENS

    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        chars = size * CHARS_PER_TOKEN
        users = max(6, chars // _RECORD_CHARS // PAIRS_RECORDS_PER_USER)
        records = make_records(rng, chars, users)
        days: dict[int, dict[str, list[dt.date]]] = defaultdict(lambda: defaultdict(list))
        for r in records:
            days[r.user][r.label].append(r.date)
        present = sorted(days)
        all_pairs = len(present) * (len(present) - 1) // 2
        for _ in range(_MAX_DRAWS):
            p = _draw_condition(rng)
            q = _draw_condition(rng) if rng.random() < 0.5 else None
            ps = {u for u in present if _holds(days[u], p)}
            qs = ps if q is None else {u for u in present if _holds(days[u], q)}
            both = len(ps & qs)  # pairs inside P & Q are met both ways: count them once
            count = len(ps) * len(qs) - both - both * (both - 1) // 2
            if 0 < count <= min(PAIRS_MAX_GOLD, all_pairs - 1):
                gold = sorted({(min(a, b), max(a, b)) for a in ps for b in qs if a != b})
                break
        else:
            raise RuntimeError(f"oolong-pairs: no usable query in {_MAX_DRAWS} draws")
        p_text = " and ".join(_describe(x) for x in p)
        if q is None:
            ask = f"List every pair of user IDs where both users have {p_text}."
        else:
            q_text = " and ".join(_describe(x) for x in q)
            ask = (
                f"List every pair of user IDs where one user has {p_text}, and the other "
                f"user has {q_text}."
            )
        answer_format = "List each pair as (lower ID, higher ID), one pair per line."
        stats = ", ".join(
            f"count(*) FILTER (WHERE label = '{label}') AS n_{_column(label)}, "
            f"min(day) FILTER (WHERE label = '{label}') AS first_{_column(label)}"
            for label in LABELS
        )
        q_or_p = q if q is not None else p
        return Instance(
            task=self.name,
            seed=seed,
            size=size,
            context=records_context(records),
            question=PREAMBLE + ask + " " + answer_format,
            expected=[list(pair) for pair in gold],
            params={
                **label_params(),
                "cond_p": [list(x) for x in p],
                "cond_q": None if q is None else [list(x) for x in q],
                "sql_stats": stats,
                "sql_p_a": _sql(p, "a"),
                "sql_p_b": _sql(p, "b"),
                "sql_q_a": _sql(q_or_p, "a"),
                "sql_q_b": _sql(q_or_p, "b"),
                "answer_format": answer_format,
            },
            meta={"records": len(records), "users": len(present), "gold_pairs": len(gold)},
        )

    def score(self, instance: Instance, answer: Any) -> float:
        return pairs_f1(answer, [tuple(pair) for pair in instance.expected])

    def strategies(self) -> dict[str, Strategy]:
        return {PAIR_MAP.name: PAIR_MAP, MAP_REDUCE.name: MAP_REDUCE}
