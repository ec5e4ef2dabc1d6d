"""``filter-map``: partition, narrow the chunks with code, map the question
over the survivors with ``llm_batch``, take the most common reply.

What an RLM root does on a needle-style question (the paper's observed
filter-then-map behaviour), written once per language so that it runs with
no root model:

1. partition the context into whole lines, at most ``filter_chunk_chars``
   characters a chunk (small enough for a small local model's window);
2. score each chunk by the question's words it contains, each word weighted
   by its rarity over the chunks (``ln(chunks / chunks holding the word)``,
   so words in every chunk count nothing); keep the chunks scoring at least
   ``filter_keep_ratio`` of the best, best first, at most
   ``filter_max_calls`` of them;
3. ``llm_batch`` the question over the kept chunks (the map);
4. answer with the most common reply that is not ``NONE`` (ties: the
   better-scored chunk), ``NONE`` when every reply was.

It knows nothing of the needle's form (unlike ``grep``): it uses the question's
words only. The sub-model's replies are taken as they come (only outer
whitespace is trimmed); the task's scorer judges them.
"""

from __future__ import annotations

from polyrlm.plugins.bench.strategy import Strategy

__all__ = [
    "FILTER_CHUNK_CHARS",
    "FILTER_KEEP_RATIO",
    "FILTER_MAP",
    "FILTER_MAP_CODE",
    "FILTER_MAX_CALLS",
]

#: Characters per chunk (whole lines): about 500 tokens, in a small model's window.
FILTER_CHUNK_CHARS = 2_000
#: Sub-calls of the map at most (the best-scored chunks are kept).
FILTER_MAX_CALLS = 8
#: Chunks scoring below this fraction of the best chunk's score are dropped.
FILTER_KEEP_RATIO = 0.5

_ASK = "Answer from the text above only. "
_OR_NONE = " If the text does not say, reply NONE."

FILTER_MAP_CODE: dict[str, tuple[str, ...]] = {
    "python": (
        """\
import math, re
text = context if isinstance(context, str) else "\\n\\n".join(context)
size = <<filter_chunk_chars:raw>>
chunks, part, used = [], [], 0
for line in text.split("\\n"):
    for piece in [line[i:i + size] for i in range(0, len(line), size)] or [""]:
        if part and used + len(piece) + 1 > size:
            chunks.append("\\n".join(part))
            part, used = [], 0
        part.append(piece)
        used += len(piece) + 1
if part:
    chunks.append("\\n".join(part))
lowered = [c.lower() for c in chunks]
words = set(re.findall(r"[a-z0-9-]+", <<question>>.lower()))
holding = {w: sum(w in c for c in lowered) for w in words}
weight = {w: math.log(len(chunks) / n) for w, n in holding.items() if n}
scores = [sum(v for w, v in weight.items() if w in c) for c in lowered]
best = max(scores, default=0.0)
ranked = sorted(range(len(chunks)), key=lambda i: (-scores[i], i))
kept = [i for i in ranked if scores[i] > 0 and scores[i] >= <<filter_keep_ratio:raw>> * best]
kept = kept[:<<filter_max_calls:raw>>]
print(len(chunks), "chunks of at most", size, "characters;", len(kept), "kept (chunk, score):",
      [(i, round(scores[i], 2)) for i in kept])""",
        f"""\
ask = "\\n\\nQuestion: " + <<question>> + "\\n{_ASK}" + <<answer_format>> + "{_OR_NONE}"
replies = llm_batch([chunks[i] + ask for i in kept])
for i, r in zip(kept, replies):
    print(i, repr(r))
counts = {{}}
for r in replies:
    if isinstance(r, SubCallFailure) or not r.strip() or re.sub("[^A-Z]", "", r.upper()) == "NONE":
        continue
    counts[r.strip()] = counts.get(r.strip(), 0) + 1
FINAL(max(counts, key=counts.get) if counts else "NONE")""",
    ),
    "sql": (
        """\
CREATE TABLE fm_chunks AS
SELECT chunk, string_agg(text, chr(10) ORDER BY <<order_col:raw>>) AS body
FROM (SELECT <<order_col:raw>>, text,
             sum(length(text) + 1) OVER (ORDER BY <<order_col:raw>>)
             // <<filter_chunk_chars:raw>> AS chunk
      FROM context)
GROUP BY chunk;
CREATE TABLE fm_words AS
SELECT DISTINCT w
FROM (SELECT unnest(regexp_split_to_array(lower(<<question>>), '[^a-z0-9-]+')) AS w)
WHERE w <> '';
CREATE TABLE fm_hits AS
SELECT c.chunk, w.w FROM fm_chunks c, fm_words w WHERE contains(lower(c.body), w.w);
CREATE TABLE fm_kept AS
WITH weight AS (SELECT w, ln((SELECT count(*) FROM fm_chunks) / count(*)) AS weight
                FROM fm_hits GROUP BY w),
     scored AS (SELECT chunk, sum(weight) AS score FROM fm_hits JOIN weight USING (w)
                GROUP BY chunk)
SELECT chunk, score FROM scored
WHERE score > 0 AND score >= <<filter_keep_ratio:raw>> * (SELECT max(score) FROM scored)
ORDER BY score DESC, chunk LIMIT <<filter_max_calls:raw>>;
SELECT (SELECT count(*) FROM fm_chunks) AS chunks, chunk, round(score, 2) AS score
FROM fm_kept ORDER BY score DESC, chunk;""",
        f"""\
CREATE TABLE fm_replies AS
SELECT k.chunk, k.score,
       llm(c.body || chr(10) || chr(10) || 'Question: ' || <<question>> || chr(10)
           || '{_ASK}' || <<answer_format>> || '{_OR_NONE}') AS reply
FROM fm_kept k JOIN fm_chunks c USING (chunk);
SELECT chunk, reply FROM fm_replies ORDER BY score DESC, chunk;
SELECT final(coalesce((
  SELECT trim(reply) FROM fm_replies
  WHERE trim(reply) <> '' AND regexp_replace(upper(reply), '[^A-Z]', '', 'g') <> 'NONE'
  GROUP BY trim(reply) ORDER BY count(*) DESC, max(score) DESC, min(chunk) LIMIT 1), 'NONE'));""",
    ),
    "bash": (
        """\
q=<<question>>
mkdir -p fm && rm -f fm/chunk_* fm/weights
if [ -d "$CONTEXT" ]; then
  for f in "$CONTEXT"/*; do cat "$f"; printf '\\n\\n'; done
else
  cat "$CONTEXT"
fi | split -d -a 6 -C <<filter_chunk_chars:raw>> - fm/chunk_
n=$(ls fm | grep -c '^chunk_')
touch fm/weights
for w in $(printf '%s\\n' "$q" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9-' '\\n' | sort -u); do
  grep -l -i -F -e "$w" fm/chunk_* > fm/hits || continue
  awk -v n="$n" -v df="$(wc -l < fm/hits)" '{ print $0, log(n / df) }' fm/hits >> fm/weights
done
awk '{ s[$1] += $2 } END { for (c in s) print c, s[c] }' fm/weights \\
  | sort -k2,2gr -k1,1 > fm/ranked
best=$(head -n 1 fm/ranked | cut -d' ' -f2)
awk -v b="${best:-0}" '$2 > 0 && $2 >= <<filter_keep_ratio:raw>> * b' fm/ranked \\
  | head -n <<filter_max_calls:raw>> > fm/kept
echo "$n chunks of at most <<filter_chunk_chars:raw>> characters; $(wc -l < fm/kept) kept \\
(chunk, score):"
cat fm/kept""",
        f"""\
ask="

Question: $q
{_ASK}"<<answer_format>>"{_OR_NONE}"
while read -r c score; do to_json -t "$(cat "$c")$ask"; done < fm/kept \\
  | llm_batch > fm/replies.jsonl
paste -d' ' fm/kept fm/replies.jsonl
# The most common reply (a JSON line) that is not NONE, empty or failed; ties: the first.
best=$(awk '{{ t = $0; gsub(/\\\\[nrt]/, " ", t); e = t; gsub(/[[:space:]"]/, "", e)
              t = toupper(t); gsub(/[^A-Z]/, "", t) }}
  t == "NONE" || e == "" || index($0, "\\"[sub-call failed") == 1 {{ next }}
  !($0 in n) {{ order[++k] = $0 }} {{ n[$0]++ }}
  END {{ for (i = 1; i <= k; i++) if (n[order[i]] > top) {{ top = n[order[i]]; pick = order[i] }}
        print pick }}' fm/replies.jsonl)
if [ -n "$best" ]; then
  printf '%s' "$(printf '%s\\n' "$best" | from_json)" | final
else
  final NONE
fi""",
    ),
}

FILTER_MAP = Strategy(
    name="filter-map",
    description="partition into small chunks, keep the chunks that best match the question's "
    "rare words, llm_batch the question over them, answer with the most common reply",
    code=FILTER_MAP_CODE,
    needs_sub_model=True,
    note="filters by question words",
    defaults={
        "filter_chunk_chars": FILTER_CHUNK_CHARS,
        "filter_max_calls": FILTER_MAX_CALLS,
        "filter_keep_ratio": FILTER_KEEP_RATIO,
    },
)
