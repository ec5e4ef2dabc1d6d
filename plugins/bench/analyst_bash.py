r"""Bash programs of the analyst strategies (see
:mod:`polyrlm.plugins.bench.analyst_strategies`): ``awk``, ``sort``, ``join``
and ``paste`` over the context's CSV files (``$CONTEXT/NAME.csv``, written
by pandas from the Parquet files), one block per kind, answering with ``final``.

CSV quoting: pandas quotes a field that holds a comma (TPC-H's comments and
addresses do; nycflights13's and the Databank's fields here do not). The
``tsv`` function turns a file into tab-separated lines, splitting at commas
outside double quotes only (an escaped ``""`` inside a field loses its quote,
which none of the columns read here holds; no field holds a tab or a
newline). Columns are found by their header names, never by position. The
scripts are plain POSIX awk (the host's may be mawk). Classify programs send
one prompt per distinct value through ``llm_batch`` and read its JSON string
lines directly (one line per reply, however many lines a reply has).
"""

from __future__ import annotations

__all__ = ["BASH", "BASH_CLASSIFY", "TSV_FUNCTION"]

#: The shell function every program starts with: ``tsv NAME`` prints
#: ``$CONTEXT/NAME.csv`` with tabs between its fields.
TSV_FUNCTION = r"""tsv() {
  awk '{ if (index($0, "\"")) { n = split($0, s, "\""); line = ""
           for (i = 1; i <= n; i++) { if (i % 2) gsub(/,/, "\t", s[i]); line = line s[i] }
           print line }
         else { gsub(/,/, "\t"); print } }' "$CONTEXT/$1.csv"
}
"""
#: awk: the first line of the (last) input is the header: column name -> index.
_HEAD = "FNR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }"
#: awk END: the key of ``v`` with the largest value; ties to the smallest key.
_BEST = (
    'END { for (k in v) if (best == "" || v[k] > bv || (v[k] == bv && k < best)) '
    "{ best = k; bv = v[k] }; print best }"
)


def _program(body: str) -> str:
    return TSV_FUNCTION + body.replace("@HEAD@", _HEAD).replace("@BEST@", _BEST)


_NYC = {
    "count": r"""tsv flights | awk -F '\t' -v o=<<origin>> -v d=<<dest>> -v m=<<month:raw>> \
  -v k=<<late:raw>> '
  @HEAD@
  $(c["origin"]) == o && $(c["dest"]) == d && $(c["month"]) == m &&
  $(c["arr_delay"]) != "" && $(c["arr_delay"]) + 0 > k { n++ }
  END { print n + 0 }' | final""",
    "group": r"""tsv flights | awk -F '\t' -v o=<<origin>> -v m=<<month:raw>> \
  -v lo=<<min_flights:raw>> '
  @HEAD@
  $(c["origin"]) == o && $(c["month"]) == m && $(c["dep_delay"]) != "" {
    s[$(c["carrier"])] += $(c["dep_delay"]); n[$(c["carrier"])]++ }
  END { for (k in n) if (n[k] >= lo) v[k] = s[k] / n[k]
        for (k in v) if (best == "" || v[k] > bv || (v[k] == bv && k < best)) {
          best = k; bv = v[k] }
        print best }' | final""",
    "join": r"""carrier=$(tsv flights | awk -F '\t' -v d=<<dest>> -v m=<<month:raw>> '
  @HEAD@
  $(c["dest"]) == d && $(c["month"]) == m { v[$(c["carrier"])]++ }
  @BEST@')
echo "carrier: $carrier"
tsv airlines | awk -F '\t' -v k="$carrier" '@HEAD@ $(c["carrier"]) == k { print $(c["name"]) }' \
  | final""",
}

_LAHMAN = {
    "count": r"""tsv Batting | awk -F '\t' -v y=<<year:raw>> -v t=<<team>> -v h=<<min_hr:raw>> '
  @HEAD@
  $(c["yearID"]) == y && $(c["teamID"]) == t { hr[$(c["playerID"])] += $(c["HR"]) }
  END { for (p in hr) if (hr[p] >= h) n++; print n + 0 }' | final""",
    "group": r"""tsv Pitching | awk -F '\t' -v y=<<year:raw>> '
  @HEAD@
  $(c["yearID"]) == y { k = $(c["teamID"]) SUBSEP $(c["playerID"])
    if (!(k in seen)) { seen[k] = 1; v[$(c["teamID"])]++ } }
  @BEST@' | final""",
    "join": r"""leader=$(tsv Batting | awk -F '\t' -v y=<<year:raw>> -v s=<<stat>> '
  @HEAD@
  $(c["yearID"]) == y && $(c[s]) != "" { v[$(c["playerID"])] += $(c[s]) }
  @BEST@')
echo "leader: $leader"
tsv People | awk -F '\t' -v p="$leader" '
  @HEAD@ $(c["playerID"]) == p { print $(c["nameFirst"]) " " $(c["nameLast"]) }' | final""",
}

_TPCH = {
    "count": r"""tsv lineitem | awk -F '\t' -v ym=<<ym>> -v s=<<mode>> -v q=<<min_qty:raw>> '
  @HEAD@
  $(c["l_shipmode"]) == s && $(c["l_quantity"]) >= q &&
  substr($(c["l_shipdate"]), 1, 7) == ym { n++ }
  END { print n + 0 }' | final""",
    "group": r"""tsv lineitem | awk -F '\t' -v y=<<year:raw>> '
  @HEAD@
  substr($(c["l_shipdate"]), 1, 4) == y {
    v[$(c["l_shipmode"])] += $(c["l_extendedprice"]) * (1 - $(c["l_discount"])) }
  @BEST@' | final""",
    "join": r"""rk=$(tsv region | awk -F '\t' -v r=<<region>> '
  @HEAD@ $(c["r_name"]) == r { print $(c["r_regionkey"]) }')
tsv nation | awk -F '\t' -v rk="$rk" '
  @HEAD@ $(c["n_regionkey"]) == rk { print $(c["n_nationkey"]) "\t" $(c["n_name"]) }' > nations.tsv
# Each lookup file starts with a dummy line, so it is never empty (NR == FNR).
{ echo "-"; tsv customer | awk -F '\t' -v keys="$(cut -f1 nations.tsv | paste -sd'|')" '
  BEGIN { n = split(keys, a, "|"); for (i = 1; i <= n; i++) nat[a[i]] = 1 }
  @HEAD@ ($(c["c_nationkey"]) in nat) { print $(c["c_custkey"]) "\t" $(c["c_nationkey"]) }'
} > customers.tsv
{ echo "-"; tsv orders | awk -F '\t' -v y=<<year:raw>> '
  NR == FNR { cn[$1] = $2; next }
  @HEAD@
  substr($(c["o_orderdate"]), 1, 4) == y && ($(c["o_custkey"]) in cn) {
    print $(c["o_orderkey"]) "\t" cn[$(c["o_custkey"])] }' customers.tsv -; } > orders.tsv
tsv lineitem | awk -F '\t' '
  NR == FNR { on[$1] = $2; next }
  @HEAD@
  ($(c["l_orderkey"]) in on) {
    v[on[$(c["l_orderkey"])]] += $(c["l_extendedprice"]) * (1 - $(c["l_discount"])) }
  @BEST@' orders.tsv - > best_key.txt
awk -F '\t' -v k="$(cat best_key.txt)" '$1 == k { print $2 }' nations.tsv | final""",
}

#: Dataset -> kind -> the offline program.
BASH = {
    dataset: {kind: _program(body) for kind, body in kinds.items()}
    for dataset, kinds in (("nycflights", _NYC), ("lahman", _LAHMAN), ("tpch", _TPCH))
}

_CLASSIFY = {
    "nycflights": r"""tsv flights | awk -F '\t' '@HEAD@ { n[$(c["dest"])]++ }
  END { for (k in n) print k "\t" n[k] }' | sort > dest_counts.tsv
tsv airports | awk -F '\t' '
  @HEAD@ { print $(c["faa"]) "\t" $(c["name"]) "\t" $(c["lat"]) "\t" $(c["lon"]) }' \
  | sort > airports.tsv
join -t "$(printf '\t')" -a 1 -e '' -o 0,1.2,2.2,2.3,2.4 dest_counts.tsv airports.tsv > dests.tsv
awk -F '\t' -v ask=<<airport_ask>> -v reply=<<airport_reply>> '{
  where = ($3 == "") ? " (not in the airports table)" \
    : " (" $3 ", at latitude " $4 ", longitude " $5 ")"
  print ask $1 where reply }' dests.tsv | to_json | llm_batch > states.jsonl
paste dests.tsv states.jsonl | awk -F '\t' -v s=<<state>> '{
  r = toupper($6); gsub(/[^A-Z]/, "", r); if (substr(r, 1, 2) == s) t += $2 }
  END { print t + 0 }' | final""",
    "lahman": r"""tsv People | awk -F '\t' '
  @HEAD@ $(c["birthCountry"]) != "" { print $(c["birthCountry"]) }' | sort -u > countries.txt
awk -v ask=<<country_ask>> -v reply=<<country_reply>> '{ print ask $0 reply }' countries.txt \
  | to_json | llm_batch > replies.jsonl
paste countries.txt replies.jsonl \
  | awk -F '\t' 'tolower($2) ~ /^" *yes/ { print $1 }' > european.txt
cat european.txt
tsv People | awk -F '\t' -v d=<<decade:raw>> -v list="$(paste -sd'|' european.txt)" '
  BEGIN { n = split(list, a, "|"); for (i = 1; i <= n; i++) eu[a[i]] = 1 }
  @HEAD@
  $(c["birthYear"]) != "" && $(c["birthYear"]) >= d && $(c["birthYear"]) <= d + 9 &&
  ($(c["birthCountry"]) in eu) { k++ }
  END { print k + 0 }' | final""",
    "tpch": r"""tsv nation | awk -F '\t' '
  @HEAD@ { print $(c["n_nationkey"]) "\t" $(c["n_name"]) }' \
  | sort -t "$(printf '\t')" -k2 > nations.tsv
cut -f2 nations.tsv | awk -v a=<<nation_ask>> -v b=<<nation_mid>> -v f=<<criterion>> \
  -v e=<<nation_end>> '{ print a $0 b f e }' | to_json | llm_batch > replies.jsonl
keys=$(paste nations.tsv replies.jsonl \
  | awk -F '\t' 'tolower($3) ~ /^" *yes/ { printf "%s%s", sep, $1; sep = "|" }')
echo "nation keys: $keys"
{ echo "-"; tsv customer | awk -F '\t' -v keys="$keys" '
  BEGIN { n = split(keys, a, "|"); for (i = 1; i <= n; i++) k[a[i]] = 1 }
  @HEAD@ ($(c["c_nationkey"]) in k) { print $(c["c_custkey"]) }'; } > customers.txt
tsv orders | awk -F '\t' -v y=<<year:raw>> '
  NR == FNR { cu[$1] = 1; next }
  @HEAD@
  substr($(c["o_orderdate"]), 1, 4) == y && ($(c["o_custkey"]) in cu) { n++ }
  END { print n + 0 }' customers.txt - | final""",
}

#: Dataset -> {"classify": program}: one llm_batch item per distinct value.
BASH_CLASSIFY = {dataset: {"classify": _program(body)} for dataset, body in _CLASSIFY.items()}
