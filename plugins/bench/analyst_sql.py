"""SQL programs of the analyst strategies (see
:mod:`polyrlm.plugins.bench.analyst_strategies`): plain DuckDB SQL over the
context's views, one block per kind, answering with ``final()``. The
classify programs call ``llm()`` once per distinct value (a table of the
replies), then count in SQL."""

from __future__ import annotations

__all__ = ["SQL", "SQL_CLASSIFY"]

_NYC = {
    "count": """\
SELECT final(count(*)) FROM flights
WHERE origin = <<origin>> AND dest = <<dest>> AND month = <<month:raw>>
  AND arr_delay > <<late:raw>>;""",
    "group": """\
SELECT final(carrier) FROM (
  SELECT carrier FROM flights
  WHERE origin = <<origin>> AND month = <<month:raw>> AND dep_delay IS NOT NULL
  GROUP BY carrier HAVING count(*) >= <<min_flights:raw>>
  ORDER BY avg(dep_delay) DESC, carrier LIMIT 1);""",
    "join": """\
SELECT final(a.name) FROM (
  SELECT carrier, count(*) AS n FROM flights
  WHERE dest = <<dest>> AND month = <<month:raw>>
  GROUP BY carrier ORDER BY n DESC, carrier LIMIT 1) top
JOIN airlines a ON a.carrier = top.carrier;""",
}

_LAHMAN = {
    "count": """\
SELECT final(count(*)) FROM (
  SELECT playerID FROM Batting WHERE yearID = <<year:raw>> AND teamID = <<team>>
  GROUP BY playerID HAVING sum(HR) >= <<min_hr:raw>>);""",
    "group": """\
SELECT final(teamID) FROM (
  SELECT teamID FROM Pitching WHERE yearID = <<year:raw>>
  GROUP BY teamID ORDER BY count(DISTINCT playerID) DESC, teamID LIMIT 1);""",
    "join": """\
SELECT final(p.nameFirst || ' ' || p.nameLast) FROM (
  SELECT playerID, sum("<<stat:raw>>") AS total FROM Batting WHERE yearID = <<year:raw>>
  GROUP BY playerID ORDER BY total DESC NULLS LAST, playerID LIMIT 1) b
JOIN People p ON p.playerID = b.playerID;""",
}

_TPCH = {
    "count": """\
SELECT final(count(*)) FROM lineitem
WHERE l_shipdate >= make_date(<<year:raw>>, <<month:raw>>, 1)
  AND l_shipdate < make_date(<<year:raw>>, <<month:raw>>, 1) + INTERVAL 1 MONTH
  AND l_shipmode = <<mode>> AND l_quantity >= <<min_qty:raw>>;""",
    "group": """\
SELECT final(l_shipmode) FROM (
  SELECT l_shipmode, sum(l_extendedprice * (1 - l_discount)) AS revenue FROM lineitem
  WHERE l_shipdate >= make_date(<<year:raw>>, 1, 1)
    AND l_shipdate < make_date(<<year:raw>> + 1, 1, 1)
  GROUP BY l_shipmode ORDER BY revenue DESC, l_shipmode LIMIT 1);""",
    "join": """\
SELECT final(n_name) FROM (
  SELECT n.n_name, sum(l.l_extendedprice * (1 - l.l_discount)) AS revenue
  FROM region r
  JOIN nation n ON n.n_regionkey = r.r_regionkey
  JOIN customer c ON c.c_nationkey = n.n_nationkey
  JOIN orders o ON o.o_custkey = c.c_custkey
  JOIN lineitem l ON l.l_orderkey = o.o_orderkey
  WHERE r.r_name = <<region>>
    AND o.o_orderdate >= make_date(<<year:raw>>, 1, 1)
    AND o.o_orderdate < make_date(<<year:raw>> + 1, 1, 1)
  GROUP BY n.n_name ORDER BY revenue DESC, n.n_name LIMIT 1);""",
}

#: Dataset -> kind -> the offline program.
SQL = {"nycflights": _NYC, "lahman": _LAHMAN, "tpch": _TPCH}

#: Dataset -> {"classify": program}: one llm() per distinct value.
SQL_CLASSIFY = {
    "nycflights": {
        "classify": """\
CREATE OR REPLACE TABLE dest_state AS
SELECT d.dest, llm(<<airport_ask>> || d.dest
       || coalesce(' (' || a.name || ', at latitude ' || CAST(a.lat AS VARCHAR)
                   || ', longitude ' || CAST(a.lon AS VARCHAR) || ')',
                   ' (not in the airports table)')
       || <<airport_reply>>) AS reply
FROM (SELECT DISTINCT dest FROM flights) d LEFT JOIN airports a ON a.faa = d.dest;
SELECT final(count(*)) FROM flights f JOIN dest_state s ON s.dest = f.dest
WHERE left(upper(regexp_replace(s.reply, '[^A-Za-z]', '', 'g')), 2) = <<state>>;""",
    },
    "lahman": {
        "classify": """\
CREATE OR REPLACE TABLE place AS
SELECT birthCountry, llm(<<country_ask>> || birthCountry || <<country_reply>>) AS reply
FROM (SELECT DISTINCT birthCountry FROM People WHERE birthCountry IS NOT NULL);
SELECT final(count(*)) FROM People p JOIN place ON place.birthCountry = p.birthCountry
WHERE p.birthYear BETWEEN <<decade:raw>> AND <<decade:raw>> + 9
  AND lower(trim(place.reply)) LIKE 'yes%';""",
    },
    "tpch": {
        "classify": """\
CREATE OR REPLACE TABLE fact AS
SELECT n_nationkey, n_name,
       llm(<<nation_ask>> || n_name || <<nation_mid>> || <<criterion>> || <<nation_end>>) AS reply
FROM nation;
SELECT final(count(*)) FROM orders o
JOIN customer c ON c.c_custkey = o.o_custkey
JOIN fact f ON f.n_nationkey = c.c_nationkey
WHERE o.o_orderdate >= make_date(<<year:raw>>, 1, 1)
  AND o.o_orderdate < make_date(<<year:raw>> + 1, 1, 1)
  AND lower(trim(f.reply)) LIKE 'yes%';""",
    },
}
