"""Scripted strategies of the analyst tasks (``nycflights``, ``lahman``, ``tpch``).

The root model an analyst strategy stands in for reads the question's kind
and writes the program for it: :class:`KindStrategy` holds one program per
dataset, kind and language and replays the one the instance asks for (one
block, one root turn). Python uses pandas on the table variables (it runs
on python-inline, the kernel and WASM alike), SQL plain DuckDB SQL over the
views, Bash ``awk``/``sort``/``join`` over the CSV files in ``$CONTEXT``
(:mod:`polyrlm.plugins.bench.analyst_sql`, :mod:`polyrlm.plugins.bench.analyst_bash`).

* ``analyst``: no sub-model; answers ``count``, ``group`` and ``join``. A
  ``classify`` question needs world knowledge per row: it gets a block that
  says so and sets no answer (a run with no answer, scored 0);
* ``analyst-llm``: the same programs, and for ``classify`` one sub-model call
  per distinct value (``llm_batch`` in Python and Bash, ``llm()`` over the
  distinct values in SQL), then the count in code. The prompts are the same
  in every language (the parameters in :data:`PROMPTS`), so one oracle
  sub-model answers them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from polyrlm.plugins.bench.analyst_bash import BASH, BASH_CLASSIFY
from polyrlm.plugins.bench.analyst_sql import SQL, SQL_CLASSIFY
from polyrlm.plugins.bench.strategy import Strategy, render

__all__ = ["ANALYST", "ANALYST_LLM", "PROMPTS", "KindStrategy", "Programs"]

#: Dataset -> kind -> language -> blocks (templates).
Programs = Mapping[str, Mapping[str, Mapping[str, Sequence[str]]]]

#: The fixed parts of the classify prompts (one prompt per distinct value).
PROMPTS = {
    "airport_ask": "In which US state or territory is the airport with FAA code ",
    "airport_reply": "? Reply with its two-letter postal code only.",
    "country_ask": "A baseball player's birthCountry is recorded as '",
    "country_reply": "'. Is that place in Europe (Russia counts as European; overseas parts "
    "of European states, such as Curacao or Aruba, do not)? Reply yes or no.",
    "nation_ask": "Nation: ",
    "nation_mid": ". Question: is this nation ",
    "nation_end": "? Reply yes or no.",
}

#: Why ``analyst`` sets no answer to a ``classify`` question.
_NO_CLASSIFY = "classify needs world knowledge per row (a sub-model): see analyst-llm"
_UNANSWERED = {
    "python": f"raise NotImplementedError({_NO_CLASSIFY!r})",
    "sql": "SELECT error('" + _NO_CLASSIFY.replace("'", "''") + "');",
    "bash": f"echo '{_NO_CLASSIFY}' >&2; false",
}


@dataclass(frozen=True)
class KindStrategy(Strategy):
    """A strategy with a program per dataset and question kind (``params``
    ``dataset`` and ``kind`` pick it); a kind it has no program for gets a
    block that raises, so the run ends with no answer."""

    programs: Programs = field(default_factory=dict)

    def blocks(self, language: str, params: Mapping[str, Any]) -> list[str]:
        by_language = self.programs.get(params["dataset"], {}).get(params["kind"], {})
        templates = by_language.get(language, (_UNANSWERED[language],))
        filled = {**self.defaults, **params}
        return [render(block, language, filled) for block in templates]


_PY_NYC = {
    "count": """\
f = flights
hit = ((f["origin"] == <<origin>>) & (f["dest"] == <<dest>>) & (f["month"] == <<month:raw>>)
       & (f["arr_delay"] > <<late:raw>>))
print(int(hit.sum()), "flights")
FINAL(int(hit.sum()))""",
    "group": """\
f = flights[(flights["origin"] == <<origin>>) & (flights["month"] == <<month:raw>>)
            & flights["dep_delay"].notna()]
g = f.groupby("carrier")["dep_delay"].agg(["mean", "size"])
g = g[g["size"] >= <<min_flights:raw>>]
print(g.sort_values("mean", ascending=False).head())
FINAL(sorted(g.index[g["mean"] == g["mean"].max()])[0])""",
    "join": """\
f = flights[(flights["dest"] == <<dest>>) & (flights["month"] == <<month:raw>>)]
n = f.groupby("carrier").size()
top = sorted(n.index[n == n.max()])[0]
name = airlines.set_index("carrier").loc[top, "name"]
print(n.sort_values(ascending=False).head(), name)
FINAL(name)""",
    "classify": """\
import re
counts = flights["dest"].value_counts()
info = airports.set_index("faa")
codes = sorted(counts.index)
def where(code):
    if code not in info.index:
        return " (not in the airports table)"
    row = info.loc[code]
    return f" ({row['name']}, at latitude {row['lat']}, longitude {row['lon']})"
replies = llm_batch([<<airport_ask>> + c + where(c) + <<airport_reply>> for c in codes])
state = {c: re.sub("[^A-Z]", "", str(r).upper())[:2] for c, r in zip(codes, replies)}
print(sorted(c for c in codes if state[c] == <<state>>))
FINAL(int(sum(int(counts[c]) for c in codes if state[c] == <<state>>)))""",
}

_PY_LAHMAN = {
    "count": """\
b = Batting[(Batting["yearID"] == <<year:raw>>) & (Batting["teamID"] == <<team>>)]
hr = b.groupby("playerID")["HR"].sum()
print(hr.sort_values(ascending=False).head())
FINAL(int((hr >= <<min_hr:raw>>).sum()))""",
    "group": """\
p = Pitching[Pitching["yearID"] == <<year:raw>>]
n = p.groupby("teamID")["playerID"].nunique()
print(n.sort_values(ascending=False).head())
FINAL(sorted(n.index[n == n.max()])[0])""",
    "join": """\
b = Batting[Batting["yearID"] == <<year:raw>>].groupby("playerID")[<<stat>>].sum(min_count=1)
b = b.dropna()
leader = sorted(b.index[b == b.max()])[0]
row = People[People["playerID"] == leader].iloc[0]
print(leader, b.max())
FINAL(f"{row['nameFirst']} {row['nameLast']}")""",
    "classify": """\
countries = sorted(People["birthCountry"].dropna().unique())
replies = llm_batch([<<country_ask>> + c + <<country_reply>> for c in countries])
european = [c for c, r in zip(countries, replies) if str(r).strip().lower().startswith("yes")]
years = People["birthYear"]
born = People[(years >= <<decade:raw>>) & (years <= <<decade:raw>> + 9)]
print(european)
FINAL(int(born["birthCountry"].isin(european).sum()))""",
}

# Dates go through pd.to_datetime: DATE columns arrive as datetime.date objects
# from Parquet, but as other types through other loaders (WASM's table JSON).
_PY_TPCH = {
    "count": """\
import pandas as pd
li = lineitem[(lineitem["l_shipmode"] == <<mode>>) & (lineitem["l_quantity"] >= <<min_qty:raw>>)]
d = pd.to_datetime(li["l_shipdate"])
FINAL(int(((d.dt.year == <<year:raw>>) & (d.dt.month == <<month:raw>>)).sum()))""",
    "group": """\
import pandas as pd
li = lineitem[(pd.to_datetime(lineitem["l_shipdate"]).dt.year == <<year:raw>>).to_numpy()]
rev = (li["l_extendedprice"] * (1 - li["l_discount"])).groupby(li["l_shipmode"]).sum()
print(rev.sort_values(ascending=False))
FINAL(sorted(rev.index[rev == rev.max()])[0])""",
    "join": """\
import pandas as pd
nat = nation.merge(region, left_on="n_regionkey", right_on="r_regionkey")
nat = nat[nat["r_name"] == <<region>>]
cust = customer.loc[customer["c_nationkey"].isin(nat["n_nationkey"]), ["c_custkey", "c_nationkey"]]
year = pd.to_datetime(orders["o_orderdate"]).dt.year.to_numpy()
o = orders.loc[year == <<year:raw>>, ["o_orderkey", "o_custkey"]]
o = o.merge(cust, left_on="o_custkey", right_on="c_custkey")[["o_orderkey", "c_nationkey"]]
li = lineitem[["l_orderkey", "l_extendedprice", "l_discount"]].merge(
    o, left_on="l_orderkey", right_on="o_orderkey")
rev = (li["l_extendedprice"] * (1 - li["l_discount"])).groupby(li["c_nationkey"]).sum()
rev.index = rev.index.map(nat.set_index("n_nationkey")["n_name"])
print(rev.sort_values(ascending=False))
FINAL(sorted(rev.index[rev == rev.max()])[0])""",
    "classify": """\
import pandas as pd
names = sorted(nation["n_name"])
replies = llm_batch([<<nation_ask>> + n + <<nation_mid>> + <<criterion>> + <<nation_end>>
                     for n in names])
yes = [n for n, r in zip(names, replies) if str(r).strip().lower().startswith("yes")]
keys = nation.loc[nation["n_name"].isin(yes), "n_nationkey"]
custs = customer.loc[customer["c_nationkey"].isin(keys), "c_custkey"]
o = orders[(pd.to_datetime(orders["o_orderdate"]).dt.year == <<year:raw>>).to_numpy()]
print(yes)
FINAL(int(o["o_custkey"].isin(custs).sum()))""",
}

_PYTHON = {"nycflights": _PY_NYC, "lahman": _PY_LAHMAN, "tpch": _PY_TPCH}


def _programs(classify: bool) -> dict[str, dict[str, dict[str, tuple[str, ...]]]]:
    out: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {}
    for dataset, python in _PYTHON.items():
        sql = {**SQL[dataset], **(SQL_CLASSIFY[dataset] if classify else {})}
        bash = {**BASH[dataset], **(BASH_CLASSIFY[dataset] if classify else {})}
        kinds = [k for k in python if classify or k != "classify"]
        out[dataset] = {
            k: {"python": (python[k],), "sql": (sql[k],), "bash": (bash[k],)} for k in kinds
        }
    return out


def _code(programs: Programs) -> dict[str, tuple[str, ...]]:
    """Every block by language (what ``Strategy.code`` lists; ``blocks`` picks one)."""
    code: dict[str, list[str]] = {}
    for kinds in programs.values():
        for languages in kinds.values():
            for language, blocks in languages.items():
                code.setdefault(language, []).extend(blocks)
    return {language: tuple(blocks) for language, blocks in code.items()}


_OFFLINE = _programs(classify=False)
_WITH_LLM = _programs(classify=True)

#: Offline: count, group and join in code; classify left unanswered.
ANALYST = KindStrategy(
    name="analyst",
    description="the question's kind answered in code (pandas, SQL, awk); no sub-model, so "
    "classify questions go unanswered",
    code=_code(_OFFLINE),
    note="knows the question's structure",
    programs=_OFFLINE,
)
#: With a sub-model: the same, and classify by one sub-call per distinct value.
ANALYST_LLM = KindStrategy(
    name="analyst-llm",
    description="as analyst, and classify questions by one sub-model call per distinct value",
    code=_code(_WITH_LLM),
    needs_sub_model=True,
    note="knows the question's structure",
    defaults=PROMPTS,
    programs=_WITH_LLM,
)
