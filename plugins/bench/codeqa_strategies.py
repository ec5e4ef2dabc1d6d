"""Scripted strategies of ``codeqa``: read the relevant module's section of
the context and answer with code, no sub-model.

Python parses the section with :mod:`ast` (so it answers exactly what the
question asks); SQL and Bash read lines with regular expressions, which see
definitions at column 0 only (a function defined inside an ``if`` block is
missed) and a class's direct base only: they are approximate, as a grep is.
"""

from __future__ import annotations

from polyrlm.plugins.bench.strategy import Strategy

__all__ = ["CODE_READ"]

_PY = """\
import ast, re
parts = re.split(r"^##### module (\\S+) \\(file \\S+\\) #####$", context, flags=re.M)
src = dict(zip(parts[1::2], parts[2::2]))
kind, options = <<kind>>, <<options>>
def defs(node):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield child
        elif not isinstance(child, ast.Lambda):
            yield from defs(child)
def letter_of(value):
    hits = [k for k, v in options.items() if v == str(value)]
    return hits[0] if hits else None
if kind == "defines":
    owners = [m for m, s in src.items() if <<name>> in {d.name for d in defs(ast.parse(s))}]
    print(owners)
    FINAL(next((letter_of(m) for m in owners if letter_of(m)), "A"))
elif kind == "count":
    tree = ast.parse(src[<<module>>])
    n = len({d.name for d in defs(tree) if not isinstance(d, ast.ClassDef)})
    print(n)
    FINAL(letter_of(n) or "A")
else:
    tree = ast.parse(src[<<module>>])
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    def members(c):
        out = set()
        for n in c.body:
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.add(n.name)
            elif isinstance(n, ast.Assign):
                out.update(t.id for t in n.targets if isinstance(t, ast.Name))
            elif isinstance(n, (ast.AnnAssign, ast.AugAssign)) and isinstance(n.target, ast.Name):
                out.add(n.target.id)
        return out
    current, owner = classes[<<class>>], None
    while owner is None and len(current.bases) == 1 and isinstance(current.bases[0], ast.Name):
        current = classes.get(current.bases[0].id)
        if current is None:
            break
        if <<method>> in members(current):
            owner = current.name
    print(owner)
    FINAL(letter_of(owner) or "A")"""

_SQL = """\
CREATE TABLE src AS
SELECT line_no, text,
       last_value(CASE WHEN text LIKE '##### module %'
                       THEN regexp_extract(text, '^##### module (\\S+)', 1) END IGNORE NULLS)
         OVER (ORDER BY line_no ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS module
FROM context;
CREATE TABLE opts AS SELECT * FROM (VALUES <<options_values:raw>>) AS t(letter, opt);
SELECT final(coalesce(CASE <<kind>>
  WHEN 'defines' THEN (
    SELECT min(o.letter) FROM opts o JOIN src s ON s.module = o.opt
    WHERE regexp_matches(s.text, '^(async def|def|class) ' || <<name>> || '\\b'))
  WHEN 'count' THEN (
    SELECT o.letter FROM opts o,
      (SELECT count(DISTINCT regexp_extract(text, '^(?:async )?def (\\w+)', 1)) AS n
       FROM src WHERE module = <<module>> AND regexp_matches(text, '^(async )?def \\w+')) c
    ORDER BY abs(TRY_CAST(o.opt AS BIGINT) - c.n) NULLS LAST LIMIT 1)
  ELSE (
    SELECT min(o.letter) FROM opts o JOIN src s ON s.module = <<module>>
    WHERE regexp_matches(s.text, '^class ' || <<class>> || '\\(')
      AND o.opt = regexp_extract(s.text, '^class \\w+\\((\\w+)\\)', 1))
END, 'A'));"""

_BASH = """\
kind=<<kind>>; name=<<name>>; module=<<module>>; cls=<<class>>
printf '%s\\n' <<options_tsv>> > opts.tsv
awk -v mod="$module" '/^##### module /{cur = $3; next} cur == mod' "$CONTEXT" > section.py
case "$kind" in
  defines)
    awk -v name="$name" '/^##### module /{cur = $3; next}
      $0 ~ ("^(async def|def|class) " name "[(:]") {print cur}' "$CONTEXT" | sort -u > owners.txt
    cat owners.txt
    awk -F'\\t' 'NR == FNR {own[$0] = 1; next} ($2 in own) {print $1}' owners.txt opts.tsv \\
      | head -n 1 | final
    ;;
  count)
    n=$(grep -E '^(async )?def [A-Za-z_][A-Za-z_0-9]*' section.py \\
        | sed -E 's/^(async )?def ([A-Za-z_0-9]+).*/\\2/' | sort -u | wc -l)
    echo "$n"
    awk -F'\\t' -v n="$n" '{d = $2 - n; if (d < 0) d = -d}
      best == "" || d < bd {best = $1; bd = d}
      END {print best}' opts.tsv | final
    ;;
  *)
    base=$(grep -m1 -E "^class $cls\\(" section.py \\
           | sed -E 's/^class [A-Za-z_0-9]+\\(([A-Za-z_0-9]+)\\).*/\\1/')
    echo "$base"
    awk -F'\\t' -v b="$base" '$2 == b {print $1; hit = 1} END {if (!hit) print "A"}' opts.tsv \\
      | head -n 1 | final
    ;;
esac"""

#: Read the module's section and answer with code: ast in Python, regular
#: expressions in SQL and Bash.
CODE_READ = Strategy(
    name="code-read",
    description="read the module's section and answer with code (ast in Python, regexes in "
    "SQL and Bash)",
    code={"python": (_PY,), "sql": (_SQL,), "bash": (_BASH,)},
    note="knows the question's structure",
)
