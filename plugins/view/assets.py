"""The viewer page's template, style and script, kept as Python strings.

The script reads the trajectory from a ``<script type="application/json">``
block and builds every element with ``textContent``: model output is
untrusted and is never parsed as HTML.
"""

from __future__ import annotations

__all__ = ["PAGE", "SCRIPT", "STYLE"]

#: The page; filled with ``str.format`` (so braces are doubled).
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header>
<h1 id="title"></h1>
<div id="summary"></div>
<div id="tools">
<input id="search" type="search" placeholder="Search prompts, replies, code, output"
 aria-label="search" autocomplete="off">
<span id="count" aria-live="polite"></span>
<button id="expand" type="button">expand all</button>
<button id="collapse" type="button">collapse all</button>
</div>
</header>
<main id="tree"></main>
<script type="application/json" id="polyrlm-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""

STYLE = """
:root { --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --bg: #fff; --mark: #ffe066;
  --run: #3b5bdb; --turn: #0c8599; --exec: #5f3dc4; --batch: #c2255c; --call: #e67700;
  --answer: #2b8a3e; --bad: #c92a2a; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 12px 16px; border-bottom: 1px solid var(--line); background: #f8f9fb; }
h1 { font-size: 18px; margin: 0 0 8px; word-break: break-word; }
main { padding: 8px 16px 40px; }
.summary { margin: 6px 0; }
.summary .line { margin: 2px 0; }
.warn { color: var(--bad); font-weight: 600; }
#tools { margin-top: 10px; display: flex; gap: 8px; align-items: center; }
#search { flex: 0 1 420px; padding: 4px 8px; font: inherit; }
#count { color: var(--muted); min-width: 6em; }
.node { margin-left: 14px; border-left: 1px solid var(--line); padding-left: 6px; }
main > .node { margin-left: 0; }
.head { cursor: pointer; padding: 2px 0; display: flex; flex-wrap: wrap; gap: 6px;
  align-items: baseline; }
.head:hover { background: #f1f3f5; }
.toggle { border: 0; background: none; cursor: pointer; width: 1.2em; padding: 0; font: inherit; }
.kind { font-size: 11px; font-weight: 600; color: #fff; border-radius: 3px; padding: 0 5px;
  text-transform: uppercase; }
.kind-run > .head .kind { background: var(--run); }
.kind-turn > .head .kind { background: var(--turn); }
.kind-exec > .head .kind { background: var(--exec); }
.kind-batch > .head .kind { background: var(--batch); }
.kind-call > .head .kind { background: var(--call); }
.kind-answer > .head .kind { background: var(--answer); }
.kind-tool > .head .kind { background: var(--call); }
.title { font-weight: 600; }
.flag { font-size: 12px; color: var(--muted); border: 1px solid var(--line); border-radius: 3px;
  padding: 0 4px; }
.flag.bad { color: var(--bad); border-color: var(--bad); }
.stats { font-size: 12px; color: var(--muted); margin-left: auto; }
.node.match > .head { background: #fff3bf; }
.node.path > .body > .section { display: none; }
.section { margin: 4px 0 6px 1.2em; }
.label { font-size: 12px; color: var(--muted); }
pre { margin: 2px 0; padding: 6px 8px; background: #f8f9fa; border: 1px solid #e9ecef;
  white-space: pre-wrap; word-break: break-word; max-height: 40em; overflow: auto;
  font: 12px/1.4 ui-monospace, monospace; }
.section.error pre { border-color: #ffc9c9; background: #fff5f5; }
mark { background: var(--mark); padding: 0; }
.more { font-size: 12px; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("polyrlm-data").textContent);
  const LIMIT = data.limits.text_chars;
  const MAX_MARKS = data.limits.marks;
  const OPEN_MATCHES = data.limits.open_matches;
  const BAD = ["failed", "error", "timed out", "restarted", "did not finish", "run did not finish",
    "no reply", "no run_started event"];
  const views = [];
  const summaryPainters = [];
  let query = "";

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // Writes text into target, query matches wrapped in <mark>; text nodes only.
  function fill(target, text) {
    target.textContent = "";
    const lower = text.toLowerCase();
    if (!query || lower.length !== text.length) { target.textContent = text; return 0; }
    let at = 0, marks = 0, i = lower.indexOf(query);
    while (i >= 0 && marks < MAX_MARKS) {
      target.appendChild(document.createTextNode(text.slice(at, i)));
      target.appendChild(el("mark", null, text.slice(i, i + query.length)));
      at = i + query.length; marks++;
      i = lower.indexOf(query, at);
    }
    target.appendChild(document.createTextNode(text.slice(at)));
    return marks;
  }

  // A text block; its paint() (registered in painters) redraws it for the query.
  function section(label, text, cls, painters) {
    const box = el("div", "section " + cls);
    const big = text.length > LIMIT;
    box.appendChild(el("div", "label", label + (big ? " (" + text.length.toLocaleString() +
      " chars)" : "")));
    const pre = el("pre", "text");
    box.appendChild(pre);
    let full = !big;
    let more = null;
    function paint() {
      if (big && !full && query && !text.slice(0, LIMIT).toLowerCase().includes(query) &&
        text.slice(LIMIT).toLowerCase().includes(query)) full = true;  // the match is further on
      fill(pre, full ? text : text.slice(0, LIMIT) + "\n…");
      if (more) more.textContent = full ? "show less" : "show all " +
        text.length.toLocaleString() + " chars";
      box.dataset.collapsed = String(!full);
    }
    if (big) {
      more = el("button", "more");
      more.type = "button";
      more.addEventListener("click", function () { full = !full; paint(); });
      box.appendChild(more);
    }
    paint();
    painters.push(paint);
    return box;
  }

  function render(v) {
    if (v.rendered) return;
    v.rendered = true;
    const frag = document.createDocumentFragment();
    for (const s of v.d.sections) {
      frag.appendChild(section(s.label, s.text, s.label, v.painters));
    }
    v.body.insertBefore(frag, v.body.firstChild);
    v.painted = query;
  }

  function repaint(v) {
    if (v.painted === query) return;
    for (const p of v.painters) p();
    v.painted = query;
  }

  function setOpen(v, open) {
    if (open) { render(v); repaint(v); }
    v.open = open;
    v.body.hidden = !open;
    v.toggle.textContent = open ? "▾" : "▸";
    v.toggle.setAttribute("aria-expanded", String(open));
  }

  function build(d, parent) {
    const v = { d: d, parent: parent, kids: [], open: false, rendered: false, hay: null,
      painters: [], painted: "" };
    v.box = el("div", "node kind-" + d.kind);
    const head = el("div", "head");
    v.toggle = el("button", "toggle", "▸");
    v.toggle.type = "button";
    head.appendChild(v.toggle);
    head.appendChild(el("span", "kind", d.kind));
    head.appendChild(el("span", "title", d.title));
    for (const f of d.flags) {
      head.appendChild(el("span", BAD.includes(f) ? "flag bad" : "flag", f));
    }
    head.appendChild(el("span", "stats", d.stats));
    head.addEventListener("click", function () { setOpen(v, !v.open); });
    v.body = el("div", "body");
    v.body.hidden = true;
    v.box.appendChild(head);
    v.box.appendChild(v.body);
    for (const c of d.children) {
      const k = build(c, v);
      v.kids.push(k);
      v.body.appendChild(k.box);
    }
    views.push(v);
    return v;
  }

  function hay(v) {
    if (v.hay === null) {
      const texts = v.d.sections.map(function (s) { return s.text; });
      const parts = [v.d.title].concat(v.d.flags, texts);
      v.hay = parts.join("\n").toLowerCase();
    }
    return v.hay;
  }

  function search(raw) {
    query = raw.trim().toLowerCase();
    const found = [];
    function visit(v) {
      const self = query !== "" && hay(v).includes(query);
      if (self) found.push(v);
      let below = false;
      for (const k of v.kids) below = visit(k) || below;
      v.box.classList.toggle("match", self);
      // An ancestor of matches only leads to them: its own texts are folded away.
      v.box.classList.toggle("path", query !== "" && !self && below);
      v.box.hidden = query !== "" && !self && !below;
      if (below) setOpen(v, true);
      return self || below;
    }
    for (const r of roots) visit(r);
    // Opening every match of a short query would draw all their texts at once.
    for (const v of found.slice(0, OPEN_MATCHES)) setOpen(v, true);
    function redraw(v) {  // only what is on screen; the rest when it is opened
      if (v.box.hidden || !v.open) return;
      repaint(v);
      for (const k of v.kids) redraw(k);
    }
    for (const r of roots) redraw(r);
    for (const p of summaryPainters) p();
    document.getElementById("count").textContent = query === "" ? "" :
      found.length + (found.length === 1 ? " match" : " matches");
  }

  document.getElementById("title").textContent = data.title;
  const summary = document.getElementById("summary");
  for (const n of data.notes) summary.appendChild(el("div", "line warn record-end", n));
  for (const s of data.summaries) {
    const box = el("div", "summary");
    if (!s.finished) box.appendChild(el("div", "line warn not-finished", "run did not finish"));
    box.appendChild(section("answer", s.answer, "answer", summaryPainters));
    box.appendChild(el("div", "line stop", "stop reason: " + s.stop_reason +
      (s.fallback ? " (fallback answer)" : "")));
    if (s.error) box.appendChild(el("div", "line warn error", "error: " + s.error));
    box.appendChild(el("div", "line totals", "totals: " + s.totals));
    summary.appendChild(box);
  }
  const tree = document.getElementById("tree");
  const roots = data.runs.map(function (d) { return build(d, null); });
  for (const r of roots) { tree.appendChild(r.box); setOpen(r, true); }

  let timer = 0;
  const input = document.getElementById("search");
  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { search(input.value); }, 120);
  });
  document.getElementById("expand").addEventListener("click", function () {
    for (const v of views) setOpen(v, true);
  });
  document.getElementById("collapse").addEventListener("click", function () {
    for (const v of views) setOpen(v, false);
  });
})();
"""
