// The review contact sheet's app. queue.html inlines this file after `const META = {...}`:
//   META = {total, pages, per_file, size, dir, version, store}
// `dir` holds one version of the queue: part-NNNNN.js (META.per_file pages, each its faces and its
// sprite as base64 JPEG, handed to moeflowPart) and index.js (every queued face_id, handed to
// moeflowIndex). One part is held at a time; the page shown has its sprite as a blob: URL.
//
// The location hash: #p=3 shows page 3; queue.csv's `thumbnail` links add the queue version and
// the cell (#v=<version>&p=3&c=17): that cell is outlined, or the sheet says the link is from
// another version of the queue (whose page 3 shows other faces).
//
// Marks live in the browser's IndexedDB (database "moeflow-review", store "marks", key
// "moeflow-review:" + META.store), keyed by face_id, with the queue version they were made on.
// Every change is one transaction that reads the stored marks and writes back only what it
// changed, so two tabs of the sheet (a queue.csv link opens another) never write over each other;
// a tab that saved tells the others (BroadcastChannel), and a tab shown again rereads. The header
// says "saving…" until the transaction completes, then "saved", and leaving the page while a write
// is pending (or after one failed) asks first. Marks an older sheet
// kept in localStorage under the same key are read once and moved. "Page checked" is not stored: a
// page shows as checked when every face on it has a mark. When the queue changes (new images, merged verdicts), marks on
// faces still waiting are kept; the others no longer apply and are set aside, visibly, with a
// button to download them.
"use strict";

const KEY = "moeflow-review:" + META.store;
const FORMAT = 2;
let db = null; // the open IndexedDB database; null when the browser cannot keep the marks
let pending = 0; // writes begun, not yet complete
let failed = null; // the error of the last write that failed, until one succeeds
let legacy = false; // the marks came from an older sheet's localStorage: removed there once saved here
let stored = null; // the marks as stored when the page opened
let state = fresh();
let current = 0;
let faces = [];
let part = null; // the part file's data that holds the page shown
let sprite = null; // the shown page's sprite, a blob: URL

function fresh() {
  return { format: FORMAT, version: META.version, fp: {}, fine: {}, stale: { fp: {}, fine: {} } };
}

function count(marks) {
  return Object.keys(marks.fp || {}).length + Object.keys(marks.fine || {}).length;
}

function el(id) {
  return document.getElementById(id);
}

function notice(text, staleButton) {
  el("notice-text").textContent = text;
  el("notice-save").hidden = !staleButton;
  el("notice").hidden = false;
}

function cannotSave(e) {
  failed = String(e);
  notice("Your marks cannot be saved in this browser (" + failed + "): download them before you close the page.", false);
}

function showSaved() {
  const text = failed !== null ? "not saved" : pending > 0 ? "saving\u2026" : "saved";
  el("saved").textContent = text;
  document.body.dataset.saved = text;
}

function showCount() {
  el("marked").textContent = Object.keys(state.fp).length + " marked, " + Object.keys(state.fine).length + " fine";
}

// Apply `change` (it sets marks, never flips them: it runs twice) to the marks here and, in one
// transaction, to the stored marks, which another tab of this sheet may have changed since this
// one read them: a tab writes what it changed, never its whole copy over another's.
function commit(change) {
  change(state);
  showCount();
  if (db === null) return showSaved();
  pending++;
  showSaved();
  let tx;
  let written = null;
  try {
    tx = db.transaction("marks", "readwrite", { durability: "strict" });
    const marks = tx.objectStore("marks");
    const get = marks.get(KEY);
    get.onsuccess = () => {
      written = get.result && get.result.format === FORMAT ? get.result : structuredClone(state);
      change(written);
      marks.put(written, KEY);
    };
  } catch (e) {
    pending--;
    cannotSave(e);
    return showSaved();
  }
  tx.oncomplete = () => {
    pending--;
    failed = null;
    if (legacy) {
      localStorage.removeItem(KEY);
      legacy = false;
    }
    if (channel !== null) channel.postMessage("saved");
    if (pending === 0) adopt(written); // what is stored now: this tab's changes and any other's
    showSaved();
  };
  tx.onabort = () => {
    pending--;
    cannotSave(tx.error || "the write was aborted");
    showSaved();
  };
}

// Replace the stored marks with `next` (marks checked against a changed queue, or moved from localStorage).
function replace(next) {
  const copy = structuredClone(next);
  commit((marks) => {
    for (const k of Object.keys(marks)) delete marks[k];
    Object.assign(marks, structuredClone(copy));
  });
}

function setMark(marks, fid, fp, fine) {
  if (fp) marks.fp[fid] = 1;
  else delete marks.fp[fid];
  if (fine) marks.fine[fid] = 1;
  else delete marks.fine[fid];
}

// Show the stored marks when they are this queue version's (another tab may have added some).
function adopt(marks) {
  if (!marks || marks.format !== FORMAT || marks.version !== META.version) return;
  state = Object.assign(fresh(), marks);
  showCount();
  if (faces.length) paint();
}

// Another tab of this sheet saved (or this one is shown again): read the marks it stored. A call
// made while one reads reads again after it, so the last change told is the one shown.
let rereading = false;
let again = false;
async function reread() {
  if (db === null) return;
  if (rereading) {
    again = true;
    return;
  }
  rereading = true;
  try {
    const marks = await storedMarks();
    if (pending === 0) adopt(marks); // otherwise this tab's own write, once complete, adopts what is stored
  } catch (e) {
    cannotSave(e);
    showSaved();
  } finally {
    rereading = false;
  }
  if (again) {
    again = false;
    reread();
  }
}

const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(KEY) : null;
if (channel !== null) channel.onmessage = reread;
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) reread();
});

function request(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function openStore() {
  const r = indexedDB.open("moeflow-review", 1);
  r.onupgradeneeded = () => r.result.createObjectStore("marks");
  r.onblocked = () => notice("Another tab holds an older version of this sheet's storage open: close it, then reload.", false);
  return request(r);
}

// The marks stored in IndexedDB (undefined: none yet).
function storedMarks() {
  return request(db.transaction("marks", "readonly").objectStore("marks").get(KEY));
}

// The marks as stored (IndexedDB, else an older sheet's localStorage), or null.
async function readStored() {
  const here = await storedMarks();
  if (here !== undefined) return here;
  const old = localStorage.getItem(KEY);
  if (old === null) return null;
  legacy = true;
  try {
    return JSON.parse(old);
  } catch (e) {
    notice("The marks an older version of this sheet kept cannot be read (" + e + "); they are left in localStorage under " +
      KEY + ".", false);
    legacy = false;
    return null;
  }
}

function loadScript(src, onerror) {
  const s = document.createElement("script");
  s.src = src;
  s.onerror = onerror;
  s.onload = () => s.remove(); // its data is handed over: drop the source text
  document.body.appendChild(s);
}

function csv(marks) {
  const rows = ["face_id,false_positive"];
  for (const k in marks.fp) rows.push(k + ",1");
  for (const k in marks.fine) if (!marks.fp[k]) rows.push(k + ",0");
  return rows.join("\n") + "\n";
}

function download(name, text) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  a.download = name;
  a.click();
}

function showStale() {
  const n = count(state.stale);
  if (n) {
    notice("This queue changed since your marks: " + n + (n === 1 ? " mark no longer applies" : " marks no longer apply") +
      " (their faces are not waiting for review any more). They are set aside, not downloaded with the others.", true);
  }
}

// Marks made on another version of the queue: keep those whose face still waits here.
window.moeflowIndex = function (data) {
  if (data.version !== META.version) return;
  const waiting = new Set(data.ids);
  const next = fresh();
  for (const kind of ["fp", "fine"]) {
    for (const fid in (stored || {})[kind] || {}) {
      if (waiting.has(fid)) next[kind][fid] = 1;
      else next.stale[kind][fid] = 1;
    }
    for (const fid in ((stored || {}).stale || {})[kind] || {}) next.stale[kind][fid] = 1;
  }
  state = next;
  replace(state);
  showStale();
  begin();
};

function hashParam(name) {
  const m = new RegExp("[#&]" + name + "=([^&]*)").exec(location.hash);
  return m ? m[1] : null;
}

function pageOf() {
  const p = hashParam("p");
  return p && /^\d+$/.test(p) ? Math.max(1, Math.min(META.pages, +p)) : 1;
}

function partOf(page) {
  return Math.ceil(page / META.per_file);
}

function go(p) {
  location.hash = "p=" + p;
}

function pageChecked() {
  return faces.length > 0 && faces.every((f) => state.fp[f[0]] || state.fine[f[0]]);
}

function paint() {
  for (const cell of document.querySelectorAll("#grid .cell")) {
    const fid = cell.dataset.fid;
    cell.classList.toggle("fp", !!state.fp[fid]);
    cell.classList.toggle("fine", !!state.fine[fid]);
  }
  el("done").checked = pageChecked();
}

function load() {
  current = pageOf();
  el("page").value = current;
  if (part && part.part === partOf(current)) {
    show();
    return;
  }
  const src = META.dir + "/part-" + String(partOf(current)).padStart(5, "0") + ".js";
  loadScript(src, () => {
    el("grid").textContent = "Cannot load " + src + ": the queue may have been regenerated since this page was opened; reload it.";
  });
}

function setChecked(on) {
  const ids = faces.map((f) => f[0]);
  commit((marks) => {
    for (const fid of ids) {
      if (on && !marks.fp[fid]) marks.fine[fid] = 1;
      if (!on) delete marks.fine[fid];
    }
  });
  paint();
}

function toggle(fid) {
  const fp = !state.fp[fid];
  const fine = !fp && pageChecked(); // on a checked page an unmarked face is fine
  commit((marks) => setMark(marks, fid, fp, fine));
  paint();
}

function cell(f, i) {
  const [fid, detector, score, url] = f;
  const c = document.createElement("div");
  c.className = "cell";
  c.dataset.fid = fid;
  const t = document.createElement("div");
  t.className = "thumb";
  t.title = fid + "\n" + detector + (score === null ? "" : " " + score);
  const x = (i % part.columns) * META.size;
  const y = Math.floor(i / part.columns) * META.size;
  t.style.backgroundImage = "url('" + sprite + "')";
  t.style.backgroundPosition = (-x) + "px " + (-y) + "px";
  t.onclick = () => toggle(fid);
  const n = document.createElement("div");
  n.className = "n";
  n.textContent = "#" + (i + 1);
  const id = document.createElement("div");
  id.className = "id";
  id.textContent = fid;
  id.title = fid;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.appendChild(document.createTextNode(detector + (score === null ? "" : " " + score.toFixed(2)) + " "));
  if (/^https?:\/\//i.test(url)) {
    const a = document.createElement("a");
    a.href = url;
    a.textContent = "src";
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    meta.appendChild(a);
  }
  c.append(t, n, id, meta);
  return c;
}

function blobUrl(base64) {
  const bin = atob(base64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" }));
}

function show() {
  const page = part.pages[current - part.first];
  faces = page.faces;
  if (sprite) URL.revokeObjectURL(sprite);
  sprite = blobUrl(page.sprite);
  const grid = el("grid");
  grid.textContent = "";
  faces.forEach((f, i) => grid.appendChild(cell(f, i)));
  paint();
  window.scrollTo(0, 0);
  target();
  document.body.dataset.page = String(current);
}

// A queue.csv link's cell: outlined when the link is from this version of the queue. Its message
// has a line of its own: the notice box may hold marks set aside, which its Dismiss discards.
function target() {
  const v = hashParam("v");
  const c = hashParam("c");
  el("link").hidden = true;
  if (v === null && c === null) return;
  if (v !== META.version) {
    el("link").textContent = "This link is from queue version " + v + "; the queue is now version " + META.version +
      " and its pages show other faces. Find the face by its face_id in the new queue.csv.";
    el("link").hidden = false;
    return;
  }
  const cells = document.querySelectorAll("#grid .cell");
  const n = +c;
  if (Number.isInteger(n) && n >= 1 && n <= cells.length) {
    cells[n - 1].classList.add("target");
    cells[n - 1].scrollIntoView({ block: "center" });
  }
}

window.moeflowPart = function (data) {
  if (data.version !== META.version || data.part !== partOf(current)) return;
  part = data;
  show();
};

function begin() {
  el("total").textContent = META.total + " faces waiting";
  el("pages").textContent = META.pages;
  el("prev").onclick = () => go(Math.max(1, current - 1));
  el("next").onclick = () => go(Math.min(META.pages, current + 1));
  el("page").onchange = (e) => go(+e.target.value || 1);
  el("done").onchange = (e) => setChecked(e.target.checked);
  el("save").onclick = () => download("verdicts.csv", csv(state));
  el("notice-save").onclick = () => download("verdicts-no-longer-queued.csv", csv(state.stale));
  el("notice-close").onclick = () => {
    commit((marks) => {
      marks.stale = { fp: {}, fine: {} };
    });
    el("notice").hidden = true;
  };
  window.onhashchange = load;
  document.body.dataset.ready = "1";
  if (META.pages === 0) {
    el("grid").textContent = "Nothing to review: every kept face has a decision.";
    document.body.dataset.page = "0";
  } else {
    load();
  }
}

const STORE_WAIT_MS = 5000; // a browser whose storage does not answer by then: the sheet opens without it

// The open database and the marks it holds; rejects when the storage fails or does not answer in time
// (a database opened later is closed unused: nothing is written that the sheet did not read first).
function openAndRead() {
  let late = false;
  const read = (async () => {
    const opened = await openStore();
    if (late) {
      opened.close();
      throw new Error("too late");
    }
    db = opened;
    return readStored();
  })();
  const timeout = new Promise((_, reject) => setTimeout(() => {
    late = true;
    reject(new Error("the browser's storage did not answer in " + STORE_WAIT_MS / 1000 + " s"));
  }, STORE_WAIT_MS));
  read.catch(() => {}); // a late answer's failure: the race has already said why
  return Promise.race([read, timeout]);
}

async function start() {
  try {
    stored = await openAndRead();
  } catch (e) {
    if (db !== null) db.close();
    db = null;
    stored = null;
    cannotSave(e);
  }
  window.addEventListener("beforeunload", (e) => {
    if (pending > 0 || (failed !== null && count(state) > 0)) e.preventDefault(); // marks not saved yet: ask
  });
  if (stored && stored.format === FORMAT && stored.version === META.version) {
    state = Object.assign(fresh(), stored);
  } else if (stored && count(stored) > 0) {
    // made on another queue (or by an older moeflow, whose page marks are dropped): check them
    loadScript(META.dir + "/index.js", () => {
      // keep every mark (they are by face_id) and the old version, so the next load checks again
      state = Object.assign(fresh(), { version: stored.version, fp: stored.fp || {}, fine: stored.fine || {},
        stale: stored.stale || { fp: {}, fine: {} } });
      notice("Cannot read " + META.dir + "/index.js to check your marks against this queue; they are kept as they were. " +
        "Regenerate the queue (dvc repro review).", false);
      begin();
    });
    return;
  } else if (stored && stored.stale) {
    state.stale = stored.stale;
  }
  if (stored !== null && (legacy || stored.format !== FORMAT || stored.version !== META.version)) replace(state);
  showCount();
  showSaved();
  showStale();
  begin();
}

start();
