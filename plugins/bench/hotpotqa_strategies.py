"""Scripted strategies of ``hotpotqa``.

Both rank the documents the same way, in code, in every language: a word is
a run of ASCII letters and digits of the lower-cased text, and a document's
score is the number of distinct question words (stop words left out) it
holds; ties go to the earlier document.

* ``retrieve-read``: the :data:`TOP_K_DOCUMENTS` best documents, best first,
  go to one sub-model call in RULER's prompt, and its reply is the answer;
* ``retrieve-titles``: no model at all: the answer is the title of the best
  document (the line after its ``Document N:`` header). A weak lexical
  baseline: right only when the answer is a paragraph's title that the
  question's words point at (some comparison questions).
"""

from __future__ import annotations

from polyrlm.plugins.bench.strategy import Strategy

__all__ = ["RETRIEVE_READ", "RETRIEVE_TITLES", "STOP_WORDS", "TOP_K_DOCUMENTS"]

#: Documents handed to the sub-model by ``retrieve-read`` (a HotpotQA question
#: has ten paragraphs of its own, about 550 characters each: 8 are ~4,500 characters).
TOP_K_DOCUMENTS = 8
#: Words that say nothing about which document answers (space-separated, lower case).
STOP_WORDS = (
    "a about after also an and are as at be been before being between both but by can "
    "did do does during for from had has have he her his how i if in into is it its "
    "many more most not of on or other over same she than that the their them then "
    "there these they this those to under was were what when where which while who "
    "whom whose why will with would"
)

# --- python (python-inline, python, wasm): `context` is a list of documents.
_RANK_PY = """\
import re
docs = context if isinstance(context, list) else [context]
stop = set(<<stop_words>>.split())
def words(text):
    return set(re.findall(r"[a-z0-9]+", text.lower())) - stop
asked = words(<<query>>)
overlap = [len(asked & words(d)) for d in docs]
ranked = sorted(range(len(docs)), key=lambda i: (-overlap[i], i))
print("question words:", sorted(asked))
print("best:", [(i, overlap[i]) for i in ranked[:<<top_k:raw>>]])
"""

_READ_PY = (
    _RANK_PY
    + """\
top = "\\n\\n".join(docs[i] for i in ranked[:<<top_k:raw>>])
reply = llm_query(<<instruction>> + "\\n\\nThe following are given documents.\\n\\n" + top
                  + "\\n\\n" + <<instruction>> + "\\n\\nQuestion: " + <<query>> + " Answer:")
FINAL(reply.strip())"""
)

_TITLES_PY = (
    _RANK_PY
    + """\
lines = docs[ranked[0]].split("\\n") if docs else []
FINAL(lines[1] if len(lines) > 1 else "")"""
)

# --- sql: table context(doc_id BIGINT, text VARCHAR).
_RANK_SQL = """\
CREATE OR REPLACE TABLE asked AS
SELECT list_distinct(list_filter(regexp_split_to_array(lower(<<query>>), '[^a-z0-9]+'),
       lambda w: w <> '' AND NOT list_contains(string_split(<<stop_words>>, ' '), w))) AS words;
CREATE OR REPLACE TABLE ranked AS
SELECT doc_id, text,
       len(list_intersect(list_distinct(regexp_split_to_array(lower(text), '[^a-z0-9]+')),
                          (SELECT words FROM asked))) AS overlap
FROM context;
SELECT doc_id, overlap FROM ranked ORDER BY overlap DESC, doc_id LIMIT <<top_k:raw>>;
"""

_READ_SQL = (
    _RANK_SQL
    + """\
SELECT final(trim(llm(<<instruction>> || chr(10) || chr(10) || 'The following are given '
       || 'documents.' || chr(10) || chr(10)
       || string_agg(text, chr(10) || chr(10) ORDER BY overlap DESC, doc_id)
       || chr(10) || chr(10) || <<instruction>> || chr(10) || chr(10) || 'Question: '
       || <<query>> || ' Answer:')))
FROM (SELECT text, overlap, doc_id FROM ranked
      ORDER BY overlap DESC, doc_id LIMIT <<top_k:raw>>);"""
)

_TITLES_SQL = (
    _RANK_SQL
    + """\
SELECT final(coalesce((SELECT split_part(text, chr(10), 2) FROM ranked
                       ORDER BY overlap DESC, doc_id LIMIT 1), ''));"""
)

# --- bash: $CONTEXT_DIR holds 000000.txt, 000001.txt, ... in document order.
# One awk over every file (through xargs: a million-token context has ~7,000
# files) instead of a pipeline per file; mawk and gawk alike.
_RANK_BASH = """\
q=<<query>>
rank_docs() {
  (cd "$CONTEXT_DIR" && printf '%s\\n' * | xargs env QUERY="$q" STOP=<<stop_words>> awk '
    function words(s, out,   m, i, t) {
      s = tolower(s); gsub(/[^a-z0-9]+/, " ", s); m = split(s, t, " ")
      for (i = 1; i <= m; i++) out[t[i]] = 1
    }
    BEGIN { words(ENVIRON["STOP"], stop); words(ENVIRON["QUERY"], all)
            for (w in all) if (!(w in stop)) asked[w] = 1 }
    FNR == 1 { if (f != "") print n, f; f = FILENAME; n = 0; split("", seen) }
    { line = tolower($0); gsub(/[^a-z0-9]+/, " ", line); m = split(line, t, " ")
      for (i = 1; i <= m; i++) if ((t[i] in asked) && !(t[i] in seen)) { seen[t[i]] = 1; n++ } }
    END { if (f != "") print n, f }') | sort -k1,1nr -k2,2
}
rank_docs | head -n <<top_k:raw>> > best.txt
echo "best (overlap, file):"; cat best.txt
"""

_READ_BASH = (
    _RANK_BASH
    + """\
instruction=<<instruction>>
{ while read -r n f; do cat "$CONTEXT_DIR/$f"; printf '\\n\\n'; done < best.txt
  printf '%s\\n\\nQuestion: %s Answer:' "$instruction" "$q"
} > prompt.txt
llm "$instruction

The following are given documents." < prompt.txt | final"""
)

_TITLES_BASH = (
    _RANK_BASH
    + """\
read -r n f < best.txt
final "$( [ -n "$f" ] && sed -n 2p "$CONTEXT_DIR/$f")\""""
)

_DEFAULTS = {"stop_words": STOP_WORDS, "top_k": TOP_K_DOCUMENTS}

#: Rank by word overlap in code, then one sub-model call over the best documents.
RETRIEVE_READ = Strategy(
    name="retrieve-read",
    description=f"rank documents by word overlap with the question, read the best "
    f"{TOP_K_DOCUMENTS} with one sub-model call",
    code={"python": (_READ_PY,), "sql": (_READ_SQL,), "bash": (_READ_BASH,)},
    needs_sub_model=True,
    defaults=_DEFAULTS,
)

#: No model: the title of the best-overlapping document.
RETRIEVE_TITLES = Strategy(
    name="retrieve-titles",
    description="answer with the title of the document sharing most words with the question",
    code={"python": (_TITLES_PY,), "sql": (_TITLES_SQL,), "bash": (_TITLES_BASH,)},
    note="no model: title of the best word-overlap document",
    defaults=_DEFAULTS,
)
