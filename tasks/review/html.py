"""The contact sheet: one static HTML file that opens from disk (file://, no server).

The page is built from real files beside this module: `sheet/queue.html` (a Jinja2 template),
`sheet/queue.js` (the app) and `sheet/queue.css`, inlined into one queue.html. It loads one page
of the queue at a time: a sprite image (`page-NNNNN.jpg`) plus a small script (`page-NNNNN.js`)
that hands the page's faces to `moeflowPage(...)`; a <script src> works from file:// where
fetch() does not. `index.js` lists every queued face, for checking a reviewer's stored marks
against a changed queue. Cells are built with textContent, never innerHTML, and only http(s)
source links are made clickable."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files

import jinja2
from markupsafe import Markup

PAGE_STEM = "page-{:05d}"
SHEET = "sheet"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("tasks.review", SHEET), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def asset(name: str) -> str:
    """The text of a file of the sheet (`queue.js`, `queue.css`), as installed with the package."""
    text = files("tasks.review").joinpath(SHEET, name).read_text(encoding="utf-8")
    if "</" + "script" in text.lower() or "</" + "style" in text.lower():
        raise ValueError(f"tasks/review/{SHEET}/{name} must not contain a closing script or style tag")
    return text


def render_html(*, total: int, pages: int, size: int, thumbs_dir: str, version: str, store: str) -> str:
    """The contact sheet. `thumbs_dir` (relative to the HTML file) holds this `version` of the queue;
    `store` names the browser's store of marks (the decisions CSV, one store per project)."""
    meta = {"total": total, "pages": pages, "size": size, "dir": thumbs_dir, "version": version, "store": store}
    return _environment().get_template("queue.html").render(
        meta=meta, size=size, cell=max(size + 6, 110), version=version,
        css=Markup(asset("queue.css")), js=Markup(asset("queue.js")))


def _script(call: str, data: dict) -> str:
    return call + "(" + json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c") + ");\n"


def render_page_js(page: int, sprite: str, columns: int, version: str, faces: list[list]) -> str:
    """The script of one page: `moeflowPage({...})` with [face_id, detector, score, url] per face."""
    return _script("moeflowPage", {"page": page, "version": version, "sprite": sprite, "columns": columns, "faces": faces})


def render_index_js(version: str, face_ids: list[str]) -> str:
    """`moeflowIndex({...})`: every face_id of this version of the queue."""
    return _script("moeflowIndex", {"version": version, "ids": face_ids})
