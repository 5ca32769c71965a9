"""The contact sheet: one static HTML file that opens from disk (file://, no server).

It loads one page at a time: each page is a sprite image (`page-NNNNN.jpg`) plus a small
script (`page-NNNNN.js`) that hands the page's faces to `moeflowPage(...)`. A <script src>
works from file:// where fetch() does not. Cells are built with textContent, never
innerHTML, and only http(s) source links are made clickable. Clicking a thumbnail marks
it as a false positive; marks live in the browser (localStorage) and "Download verdicts"
saves them as a CSV for `python -m flows.review merge --from <file>`."""

from __future__ import annotations

import json

PAGE_STEM = "page-{:05d}"

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>moeflow review queue</title>
<style>
body{font:13px system-ui,sans-serif;margin:0;background:#1d1f21;color:#ddd}
header{position:sticky;top:0;background:#2b2d30;padding:8px 12px;display:flex;gap:10px;align-items:center;flex-wrap:wrap;z-index:1}
button,input{font:inherit}
#grid{display:flex;flex-wrap:wrap;gap:6px;padding:12px}
.cell{width:__CELL__px;text-align:center}
.thumb{width:__SIZE__px;height:__SIZE__px;margin:auto;border:3px solid transparent;cursor:pointer;background-repeat:no-repeat}
.fp .thumb{border-color:#e5484d}
.fp .n{color:#e5484d;font-weight:bold}
.n,.id,.meta{font-size:11px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.id{font-family:monospace;user-select:all}
.meta a{color:#8ab4f8}
.empty{padding:20px}
</style></head><body>
<header>
<strong>moeflow review</strong>
<span id="total"></span>
<button id="prev">&larr; prev</button>
<label>page <input id="page" type="number" min="1" style="width:5em"> / <span id="pages"></span></label>
<button id="next">next &rarr;</button>
<label><input id="done" type="checkbox"> page checked: unmarked faces are fine</label>
<button id="save">Download verdicts</button>
<span id="marked"></span>
</header>
<p class="empty" id="help">Click a thumbnail to mark a false positive (not a face, or a bad crop).
The number in a cell is the <code>#N</code> of the queue.csv <code>thumbnail</code> column.
Verdicts can be typed into queue.csv, or downloaded here and merged with
<code>python -m flows.review merge --from verdicts.csv</code>.</p>
<div id="grid"></div>
<script>
const META = __META__;
const KEY = "moeflow-review:" + META.generated;
let state = {fp: {}, fine: {}, done: {}};
try { state = Object.assign(state, JSON.parse(localStorage.getItem(KEY) || "{}")); } catch (e) {}
function save() { try { localStorage.setItem(KEY, JSON.stringify(state)); } catch (e) {} count(); }
function count() {
  document.getElementById("marked").textContent =
    Object.keys(state.fp).length + " marked, " + Object.keys(state.fine).length + " fine";
}
let current = 0, faces = [];
function pageOf() { const m = /p=(\\d+)/.exec(location.hash); return m ? Math.max(1, Math.min(META.pages, +m[1])) : 1; }
function go(p) { location.hash = "p=" + p; }
function load() {
  current = pageOf();
  document.getElementById("page").value = current;
  const s = document.createElement("script");
  s.src = META.dir + "/" + META.stem.replace("N", String(current).padStart(5, "0")) + ".js";
  s.onerror = () => { document.getElementById("grid").textContent = "cannot load " + s.src; };
  document.body.appendChild(s);
}
function setFine(on) {
  state.done[current] = on;
  for (const f of faces) { if (on && !state.fp[f[0]]) state.fine[f[0]] = 1; else delete state.fine[f[0]]; }
  save();
}
window.moeflowPage = function (data) {
  if (data.page !== current) return;
  faces = data.faces;
  const grid = document.getElementById("grid");
  grid.textContent = "";
  faces.forEach((f, i) => {
    const [fid, detector, score, url] = f;
    const cell = document.createElement("div");
    cell.className = "cell" + (state.fp[fid] ? " fp" : "");
    const t = document.createElement("div");
    t.className = "thumb";
    t.title = fid + "\\n" + detector + (score === null ? "" : " " + score);
    const x = (i % data.columns) * META.size, y = Math.floor(i / data.columns) * META.size;
    t.style.backgroundImage = "url('" + META.dir + "/" + data.sprite + "')";
    t.style.backgroundPosition = (-x) + "px " + (-y) + "px";
    t.onclick = () => {
      if (state.fp[fid]) delete state.fp[fid]; else { state.fp[fid] = 1; delete state.fine[fid]; }
      if (!state.fp[fid] && state.done[current]) state.fine[fid] = 1;
      cell.classList.toggle("fp", !!state.fp[fid]);
      save();
    };
    const n = document.createElement("div"); n.className = "n"; n.textContent = "#" + (i + 1);
    const id = document.createElement("div"); id.className = "id"; id.textContent = fid; id.title = fid;
    const meta = document.createElement("div"); meta.className = "meta";
    meta.appendChild(document.createTextNode(detector + (score === null ? "" : " " + score.toFixed(2)) + " "));
    if (/^https?:\\/\\//i.test(url)) {
      const a = document.createElement("a"); a.href = url; a.textContent = "src"; a.target = "_blank"; a.rel = "noopener noreferrer";
      meta.appendChild(a);
    }
    cell.append(t, n, id, meta);
    grid.appendChild(cell);
  });
  document.getElementById("done").checked = !!state.done[current];
  window.scrollTo(0, 0);
};
document.getElementById("total").textContent = META.total + " faces waiting";
document.getElementById("pages").textContent = META.pages;
document.getElementById("prev").onclick = () => go(Math.max(1, current - 1));
document.getElementById("next").onclick = () => go(Math.min(META.pages, current + 1));
document.getElementById("page").onchange = (e) => go(+e.target.value || 1);
document.getElementById("done").onchange = (e) => setFine(e.target.checked);
document.getElementById("save").onclick = () => {
  const rows = ["face_id,false_positive"];
  for (const k in state.fp) rows.push(k + ",1");
  for (const k in state.fine) if (!state.fp[k]) rows.push(k + ",0");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([rows.join("\\n") + "\\n"], {type: "text/csv"}));
  a.download = "verdicts.csv";
  a.click();
};
window.onhashchange = load;
count();
if (META.pages === 0) document.getElementById("grid").textContent = "Nothing to review: every kept face has a decision.";
else load();
</script>
</body></html>
"""


def render_html(*, total: int, pages: int, size: int, thumbs_dir: str, generated: str) -> str:
    """The contact sheet. `thumbs_dir` is relative to the HTML file; `generated` names the browser's store of marks."""
    meta = {"total": total, "pages": pages, "size": size, "dir": thumbs_dir, "stem": "page-N", "generated": generated}
    meta_js = json.dumps(meta, ensure_ascii=True).replace("<", "\\u003c")
    return (TEMPLATE.replace("__META__", meta_js)
            .replace("__SIZE__", str(size)).replace("__CELL__", str(max(size + 6, 110))))


def render_page_js(page: int, sprite: str, columns: int, faces: list[list]) -> str:
    """The script of one page: `moeflowPage({...})` with [face_id, detector, score, url] per face."""
    data = {"page": page, "sprite": sprite, "columns": columns, "faces": faces}
    return "moeflowPage(" + json.dumps(data, ensure_ascii=True, separators=(",", ":")) + ");\n"
