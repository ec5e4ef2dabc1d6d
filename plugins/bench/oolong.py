"""``oolong``: aggregate over labels a model must infer (OOLONG trec_coarse).

The context is dated records by user IDs (:mod:`polyrlm.plugins.bench.oolong_data`);
each record's coarse type is never written. The question aggregates over
those types: a count (over all records, after a date, or of one user), the
most or least common type, or a comparison of two types. Numeric answers
score ``0.75 ** |y - y_hat|``; the others exact match (a label or one of
``more common than`` / ``less common than`` / ``same frequency as``).
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections import Counter
from typing import Any, ClassVar

from polyrlm.config import CHARS_PER_TOKEN
from polyrlm.plugins.bench.oolong_data import (
    DATE_FORMAT,
    FIRST_DAY,
    LABEL_ALIASES,
    LABELS,
    SPAN_DAYS,
    Record,
    canonical_label,
    make_records,
    record_line,
)
from polyrlm.plugins.bench.scoring import normalize, numeric_score
from polyrlm.plugins.bench.strategy import MAP_REDUCE, Strategy
from polyrlm.plugins.bench.task import Instance, Task

__all__ = [
    "COMPARISONS",
    "LABEL_BATCH",
    "LABEL_MAP",
    "OOLONG_MAX_TOKENS",
    "OOLONG_MIN_TOKENS",
    "OOLONG_RECORDS_PER_USER",
    "OolongTask",
    "label_params",
    "records_context",
]

#: Smallest and largest contexts, in tokens.
OOLONG_MIN_TOKENS = 1_000
OOLONG_MAX_TOKENS = 4_000_000
#: Records per user ID, on average (so per-user questions have a few records).
OOLONG_RECORDS_PER_USER = 25
#: Approximate characters of one record line, to size the user pool.
_RECORD_CHARS = 85
#: Records labelled per sub-model prompt by the label-map strategy.
LABEL_BATCH = 100
#: Answers of the comparison questions.
COMPARISONS = ("more common than", "less common than", "same frequency as")
_KINDS = ("count", "count_after", "count_user", "most_common", "least_common", "compare")

PREAMBLE = (
    "Each line of the context is a general-knowledge question with its date and user ID. "
    "Every question has one coarse type: " + "; ".join(LABELS) + ". The types are not "
    "written anywhere: infer each from the question's text. "
)

# Block 1 of the label-map strategies: parse the records, label them through the
# sub-model in batches, keep `recs` (date, user, question) and `found` (labels).
_LABEL_PY = """\
import re
recs = [m.groups() for m in re.finditer(
    r"^Date: (.+?) \\|\\| User: (\\d+) \\|\\| Instance: (.*)$", context, re.M)]
labels, aliases, batch = <<labels>>, <<aliases>>, <<batch:raw>>
head = ("Label each question with its coarse type, one of: " + "; ".join(labels)
        + ". Reply with one line per question: its number, a period, and the type.\\n\\n")
prompts = [head + "\\n".join(f"{j + 1}. {r[2]}" for j, r in enumerate(recs[i:i + batch]))
           for i in range(0, len(recs), batch)]
replies = llm_batch(prompts)
def label_of(text):
    t = " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())
    return t if t in labels else aliases.get(t)
found = []
for i, reply in zip(range(0, len(recs), batch), replies):
    got = {}
    for row in reply.splitlines():
        m = re.match(r"\\s*(\\d+)[.):]\\s*(.+)", row)
        if m:
            got[int(m.group(1))] = label_of(m.group(2))
    found += [got.get(j + 1) for j in range(len(recs[i:i + batch]))]
print(len(recs), "records;", sum(f is None for f in found), "unlabelled")"""

_LABEL_SQL = """\
CREATE TABLE recs AS
SELECT line_no,
       CAST(strptime(regexp_extract(text, '^Date: (.+?) \\|\\|', 1), '%b %d, %Y') AS DATE) AS day,
       CAST(regexp_extract(text, 'User: ([0-9]+)', 1) AS BIGINT) AS usr,
       regexp_extract(text, 'Instance: (.*)$', 1) AS q
FROM context WHERE text LIKE 'Date: %';
CREATE TABLE aliases AS SELECT * FROM (VALUES <<alias_values:raw>>) AS t(alias, label);
CREATE TABLE labelled AS
SELECT r.line_no, r.day, r.usr, a.label
FROM (SELECT *, trim(regexp_replace(lower(llm('Give the coarse type of this question, one of: '
             || <<labels_text>> || '. Reply with the type only.' || chr(10) || q)),
             '[^a-z ]+', ' ', 'g')) AS reply FROM recs) AS r
LEFT JOIN aliases a ON a.alias = regexp_replace(r.reply, ' +', ' ', 'g');
SELECT count(*) AS records, count(label) AS labelled FROM labelled;"""

_LABEL_BASH = """\
grep -E '^Date: ' "$CONTEXT" > recs.txt
printf '%s\\n' <<alias_tsv>> > aliases.tsv
# One JSON string per reply line: normalise it where it stands, so lines stay aligned.
sed -E 's/^.*\\|\\| Instance: //' recs.txt | to_json -p <<head>> | llm_batch \\
  | sed -E 's/\\\\n/ /g; s/[^A-Za-z ]+/ /g' | tr 'A-Z' 'a-z' | tr -s ' ' \\
  | sed -E 's/^ //; s/ $//' > replies.txt
sed -E 's/^Date: (.+) \\|\\| User: ([0-9]+) \\|\\| .*$/\\1\\t\\2/' recs.txt | paste - replies.txt \\
  > rows.tsv
echo "$(wc -l < rows.tsv) records"
"""

_AGG_PY = """\
import datetime as dt
from collections import Counter
kind, label, other = <<kind>>, <<label>>, <<label_b>>
rows = [(dt.datetime.strptime(d, "%b %d, %Y").date(), int(u), f)
        for (d, u, _), f in zip(recs, found)]
counts = Counter(f for _, _, f in rows if f)
if kind == "count":
    FINAL(counts[label])
elif kind == "count_after":
    after = dt.date.fromisoformat(<<date>>)
    FINAL(sum(1 for d, _, f in rows if d > after and f == label))
elif kind == "count_user":
    FINAL(sum(1 for _, u, f in rows if u == <<user>> and f == label))
elif kind in ("most_common", "least_common"):
    ranked = sorted(labels, key=lambda x: counts[x])
    FINAL(ranked[-1] if kind == "most_common" else ranked[0])
else:
    a, b = counts[label], counts[other]
    FINAL("more common than" if a > b else "less common than" if a < b else "same frequency as")"""

_AGG_SQL = """\
SELECT final(CASE <<kind>>
  WHEN 'count' THEN (SELECT count(*) FROM labelled WHERE label = <<label>>)::VARCHAR
  WHEN 'count_after' THEN (SELECT count(*) FROM labelled
                           WHERE label = <<label>> AND day > CAST(<<date>> AS DATE))::VARCHAR
  WHEN 'count_user' THEN (SELECT count(*) FROM labelled
                          WHERE label = <<label>> AND usr = <<user>>)::VARCHAR
  WHEN 'most_common' THEN (SELECT l.label FROM (SELECT unnest(<<labels_sql:raw>>) AS label) l
                           LEFT JOIN labelled t USING (label)
                           GROUP BY l.label ORDER BY count(t.label) DESC LIMIT 1)
  WHEN 'least_common' THEN (SELECT l.label FROM (SELECT unnest(<<labels_sql:raw>>) AS label) l
                            LEFT JOIN labelled t USING (label)
                            GROUP BY l.label ORDER BY count(t.label) ASC LIMIT 1)
  ELSE (SELECT CASE WHEN a > b THEN 'more common than' WHEN a < b THEN 'less common than'
                    ELSE 'same frequency as' END
        FROM (SELECT count(*) FILTER (WHERE label = <<label>>) AS a,
                     count(*) FILTER (WHERE label = <<label_b>>) AS b FROM labelled))
END);"""

_AGG_BASH = """\
awk -F'\\t' -v kind=<<kind>> -v label=<<label>> -v other=<<label_b>> -v after=<<date>> \\
    -v user=<<user>> '
  function ymd(d,   p, m) {
    split(d, p, /[ ,]+/); m = (index("JanFebMarAprMayJunJulAugSepOctNovDec", p[1]) + 2) / 3
    return sprintf("%04d-%02d-%02d", p[3], m, p[2])
  }
  NR == FNR { alias[$1] = $2; known[$2] = 1; next }
  { l = alias[$3]; if (l == "") next; n[l]++
    if (l == label && ymd($1) > after) na++
    if (l == label && $2 == user) nu++ }
  END {
    if (kind == "count") print n[label] + 0
    else if (kind == "count_after") print na + 0
    else if (kind == "count_user") print nu + 0
    else if (kind == "compare") {
      a = n[label] + 0; b = n[other] + 0
      print (a > b ? "more common than" : (a < b ? "less common than" : "same frequency as"))
    } else {
      best = ""
      for (k in known) {
        if (best == "" || (kind == "most_common" ? n[k] + 0 > n[best] + 0 : n[k] + 0 < n[best] + 0))
          best = k
      }
      print best
    }
  }' aliases.tsv rows.tsv | final"""

#: Label every record through the sub-model (in batches of ``LABEL_BATCH`` in
#: Python and Bash, one vectorised ``llm()`` per row in SQL), then aggregate with code.
LABEL_MAP = Strategy(
    name="label-map",
    description="label every record with the sub-model (the map), aggregate with code",
    code={
        "python": (_LABEL_PY, _AGG_PY),
        "sql": (_LABEL_SQL, _AGG_SQL),
        "bash": (_LABEL_BASH, _AGG_BASH),
    },
    needs_sub_model=True,
    note="knows the question's structure",
)


def label_params() -> dict[str, Any]:
    """The label lists, in each language's form, for the label-map blocks."""
    pairs = [(label, label) for label in LABELS] + sorted(LABEL_ALIASES.items())
    return {
        "labels": list(LABELS),
        "aliases": dict(LABEL_ALIASES),
        "batch": LABEL_BATCH,
        "labels_text": "; ".join(LABELS),
        "labels_sql": "[" + ", ".join(f"'{label}'" for label in LABELS) + "]",
        "alias_values": ", ".join(f"('{a}', '{b}')" for a, b in dict(pairs).items()),
        "alias_tsv": "\n".join(f"{a}\t{b}" for a, b in dict(pairs).items()),
        "head": "Give the coarse type of this question, one of: "
        + "; ".join(LABELS)
        + ". Reply with the type only.\n",
    }


def records_context(records: list[Record]) -> str:
    return "\n".join(record_line(r) for r in records)


def _day(rng: random.Random) -> dt.date:
    """A cut-off date between 20 % and 80 % of the span."""
    return FIRST_DAY + dt.timedelta(days=rng.randrange(SPAN_DAYS // 5, SPAN_DAYS * 4 // 5))


class OolongTask(Task):
    """Aggregation over inferred coarse types of dated, user-tagged questions."""

    name: ClassVar[str] = "oolong"
    description: ClassVar[str] = (
        "counts and comparisons over question types the model must infer; 0.75^|diff|"
    )
    metric: ClassVar[str] = "0.75^|diff| (numbers), exact (labels)"
    default_sizes: ClassVar[tuple[int, ...]] = (32_768, 131_072)
    min_size: ClassVar[int] = OOLONG_MIN_TOKENS
    max_size: ClassVar[int] = OOLONG_MAX_TOKENS

    def build(self, rng: random.Random, seed: int, size: int) -> Instance:
        chars = size * CHARS_PER_TOKEN
        users = max(4, chars // _RECORD_CHARS // OOLONG_RECORDS_PER_USER)
        records = make_records(rng, chars, users)
        counts = Counter(r.label for r in records)
        params: dict[str, Any] = {"label": None, "label_b": None, "date": None, "user": None}
        while True:  # redraw a kind whose answer would be ambiguous (a tie)
            kind = rng.choice(_KINDS)
            label, other = rng.sample(LABELS, 2)
            ranked = counts.most_common()
            if kind == "most_common" and ranked[0][1] != ranked[1][1]:
                expected: Any = ranked[0][0]
                ask = "Which type is the most common? Answer with the type."
            elif (
                kind == "least_common"
                and len(ranked) == len(LABELS)
                and (ranked[-1][1] != ranked[-2][1])
            ):
                expected = ranked[-1][0]
                ask = "Which type is the least common? Answer with the type."
            elif kind == "count":
                expected, params["label"] = counts[label], label
                ask = f"How many questions are of type '{label}'? Answer with a number."
            elif kind == "count_after":
                day = _day(rng)
                expected = sum(1 for r in records if r.date > day and r.label == label)
                params.update(label=label, date=day.isoformat())
                ask = (
                    f"How many questions dated after {day.strftime(DATE_FORMAT)} are of type "
                    f"'{label}'? Answer with a number."
                )
            elif kind == "count_user":
                user = rng.choice(sorted({r.user for r in records}))
                expected = sum(1 for r in records if r.user == user and r.label == label)
                params.update(label=label, user=user)
                ask = (
                    f"How many questions of user {user} are of type '{label}'? "
                    "Answer with a number."
                )
            elif kind == "compare":
                a, b = counts[label], counts[other]
                expected = COMPARISONS[0] if a > b else COMPARISONS[1] if a < b else COMPARISONS[2]
                params.update(label=label, label_b=other)
                ask = (
                    f"Is the type '{label}' more common than, less common than, or the same "
                    f"frequency as the type '{other}'? Answer with one of: "
                    + "; ".join(COMPARISONS)
                    + "."
                )
            else:
                continue
            break
        answer_format = (
            "Reply with a number only."
            if isinstance(expected, int)
            else ("Reply with the answer only.")
        )
        return Instance(
            task=self.name,
            seed=seed,
            size=size,
            context=records_context(records),
            question=PREAMBLE + ask,
            expected=expected,
            params={**params, **label_params(), "kind": kind, "answer_format": answer_format},
            meta={"records": len(records), "users": len({r.user for r in records})},
        )

    def score(self, instance: Instance, answer: Any) -> float:
        expected = instance.expected
        if isinstance(expected, int):
            return numeric_score(answer, expected)
        if expected in COMPARISONS:
            said = normalize(answer)
            named = {c for c in ("more", "less", "same") if re.search(rf"\b{c}\b", said)}
            return float(named == {expected.split()[0]})
        return float(canonical_label(normalize(answer)) == expected)

    def strategies(self) -> dict[str, Strategy]:
        return {LABEL_MAP.name: LABEL_MAP, MAP_REDUCE.name: MAP_REDUCE}
