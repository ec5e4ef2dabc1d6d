"""Scripted strategies of ``multihop``.

* ``grep-chain``: follow the chain with one anchored regular expression per
  hop (it knows the facts' sentence forms; no sub-model);
* ``hop-read``: per hop, take the documents that mention the current entity
  and ask the sub-model that hop's question over them (grep, then read).
"""

from __future__ import annotations

from polyrlm.plugins.bench.strategy import Strategy

__all__ = ["GREP_CHAIN", "HOP_READ", "HOP_READ_MAX_CHARS"]

#: Characters of matching documents handed to the sub-model per hop.
HOP_READ_MAX_CHARS = 200_000

_GREP_PY = """\
import re
docs = context if isinstance(context, list) else [context]
x = <<start>>
for before, after in <<hops>>:
    pattern = re.compile("^" + re.escape(before + x + after) + "([A-Z][a-z]+)", re.M)
    hit = next((m for d in docs for m in [pattern.search(d)] if m), None)
    print(repr(before + x + after), "->", hit.group(1) if hit else None)
    if hit is None:
        x = ""
        break
    x = hit.group(1)
FINAL(x)"""

_GREP_SQL = """\
CREATE TABLE hops AS SELECT * FROM (VALUES <<hops_values:raw>>) AS t(step, before, after);
WITH RECURSIVE chain(step, entity) AS (
  SELECT 0, <<start>>
  UNION ALL
  SELECT c.step + 1,
         (SELECT regexp_extract(d.text, '(?m)^' || h.before || c.entity || h.after
                                || '([A-Z][a-z]+)', 1)
          FROM context d
          WHERE regexp_matches(d.text, '(?m)^' || h.before || c.entity || h.after)
          ORDER BY d.doc_id LIMIT 1)
  FROM chain c JOIN hops h ON h.step = c.step + 1
  WHERE c.entity IS NOT NULL
)
SELECT final(coalesce((SELECT entity FROM chain ORDER BY step DESC LIMIT 1), ''));"""

_GREP_BASH = """\
x=<<start>>
while IFS='|' read -r before after; do
  x=$(grep -h -m1 -oE "^$before$x$after[A-Z][a-z]+" "$CONTEXT_DIR"/* | head -n 1 \\
      | sed -E "s/^.*$after//")
  echo "-> ${x:-not found}"
  [ -n "$x" ] || break
done <<'HOPS'
<<hops_bar:raw>>
HOPS
final "$x\""""

_READ_PY = """\
docs = context if isinstance(context, list) else [context]
x = <<start>>
for question in <<hop_questions>>:
    found = "\\n\\n".join(d for d in docs if x in d)[:<<max_chars:raw>>]
    reply = llm_query(question.format(x=x) + " Reply with the name only.\\n\\n" + found)
    print(question.format(x=x), "->", reply)
    x = reply.strip().strip(".").strip()
FINAL(x)"""

_READ_SQL = """\
CREATE TABLE hopq AS SELECT * FROM (VALUES <<hop_values:raw>>) AS t(step, question);
WITH RECURSIVE chain(step, entity) AS (
  SELECT 0, <<start>>
  UNION ALL
  SELECT c.step + 1,
         trim(llm(replace(q.question, '{x}', c.entity) || ' Reply with the name only.'
                  || chr(10) || chr(10)
                  || coalesce((SELECT left(string_agg(d.text, chr(10) || chr(10)
                                                      ORDER BY d.doc_id), <<max_chars:raw>>)
                               FROM context d WHERE strpos(d.text, c.entity) > 0), '')), ' .')
  FROM chain c JOIN hopq q ON q.step = c.step + 1
  WHERE c.entity IS NOT NULL
)
SELECT final(coalesce((SELECT entity FROM chain ORDER BY step DESC LIMIT 1), ''));"""

#: Follow the chain with anchored regular expressions; knows the facts' forms.
GREP_CHAIN = Strategy(
    name="grep-chain",
    description="follow the chain with one anchored regular expression per hop",
    code={"python": (_GREP_PY,), "sql": (_GREP_SQL,), "bash": (_GREP_BASH,)},
    note="knows the facts' sentence forms",
)

#: Per hop: the documents naming the current entity, read by the sub-model.
HOP_READ = Strategy(
    name="hop-read",
    description="per hop, grep the documents naming the entity and ask the sub-model",
    code={"python": (_READ_PY,), "sql": (_READ_SQL,)},
    needs_sub_model=True,
    note="knows the chain's hops",
)
