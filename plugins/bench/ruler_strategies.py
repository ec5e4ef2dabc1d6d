"""Scripted strategies of the RULER tasks (:mod:`polyrlm.plugins.bench.ruler`),
answering with code alone (no sub-model):

* ``grep`` (NIAH): sniah's (:data:`polyrlm.plugins.bench.sniah.GREP`), one
  regular expression on the asked key's needle,
  ``One of the special magic numbers for KEY is: ([0-9]+)``; it knows the
  needle's form, so it is an upper bound on search, not a reading test;
* ``chain`` (vt): extract every ``VAR X = ...`` assignment, then follow them
  from the asked value to a fixed point (each pass adds the variables assigned
  from one already found), and answer the names: a list in Python, joined
  with ``", "`` in SQL and Bash.

The patterns match inside a line (a needle or a statement never holds a line
break), so they work on the SQL table of lines and on ``$CONTEXT`` alike.
"""

from __future__ import annotations

from polyrlm.plugins.bench.strategy import Strategy

__all__ = ["CHAIN", "CHAIN_MAX_HOPS"]

#: Hops the SQL recursion follows at most: it ends even on a cyclic chain
#: (RULER's chain has 4; Python and Bash stop at a fixed point instead).
CHAIN_MAX_HOPS = 1_000

# The assignment's right-hand side is a number or another variable.
_CHAIN_PY = """\
import re
assigns = re.findall(r"VAR ([A-Z]+) = (?:VAR )?([A-Z]+|[0-9]+)", context)
print(len(assigns), "assignments")
found, names, changed = {<<value>>}, [], True
while changed:
    changed = False
    for name, source in assigns:
        if source in found and name not in found:
            found.add(name)
            names.append(name)
            changed = True
print(names)
FINAL(names)"""

_CHAIN_SQL = """\
CREATE TABLE assigns AS
SELECT regexp_extract(a, '^VAR ([A-Z]+)', 1) AS name,
       regexp_extract(a, '= (?:VAR )?([A-Z]+|[0-9]+)$', 1) AS source
FROM (SELECT unnest(regexp_extract_all(text, 'VAR [A-Z]+ = (?:VAR [A-Z]+|[0-9]+)')) AS a
      FROM context WHERE text LIKE '%VAR %');
WITH RECURSIVE chain(name, hop) AS (
  SELECT name, 1 FROM assigns WHERE source = <<value>>
  UNION ALL
  SELECT a.name, c.hop + 1 FROM assigns a JOIN chain c ON a.source = c.name
  WHERE c.hop < <<max_hops:raw>>
)
SELECT final(coalesce(string_agg(name, ', ' ORDER BY hop, name), ''))
FROM (SELECT name, min(hop) AS hop FROM chain GROUP BY name);"""

_CHAIN_BASH = """\
grep -oE 'VAR [A-Z]+ = (VAR [A-Z]+|[0-9]+)' "$CONTEXT" > assigns.txt
echo "$(wc -l < assigns.txt) assignments"
awk -v start=<<value>> '
  { name[NR] = $2; source[NR] = $NF }
  END {
    found[start] = 1; changed = 1
    while (changed) {
      changed = 0
      for (i = 1; i <= NR; i++)
        if ((source[i] in found) && !(name[i] in found)) {
          found[name[i]] = 1; names[++n] = name[i]; changed = 1
        }
    }
    for (i = 1; i <= n; i++) printf "%s%s", (i > 1 ? ", " : ""), names[i]
  }' assigns.txt | final"""

CHAIN = Strategy(
    name="chain",
    description="extract the VAR assignments and follow them from the value with code",
    note="knows the statements' form",
    code={"python": (_CHAIN_PY,), "sql": (_CHAIN_SQL,), "bash": (_CHAIN_BASH,)},
    defaults={"max_hops": CHAIN_MAX_HOPS},
)
