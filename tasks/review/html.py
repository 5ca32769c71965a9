"""The contact sheet: one static HTML file that opens from disk (file://, no server).

The page is built from real files beside this module: `sheet/queue.html` (a Jinja2 template),
`sheet/queue.js` (the app) and `sheet/queue.css`, inlined into one queue.html. It loads one part
of the queue at a time: a script (`part-NNNNN.js`) that hands `review.pages_per_file` pages to
`moeflowPart(...)`, each page its faces and its sprite (a JPEG, base64): one file per part, not two
per page, so DVC tracks one file per `pages_per_file x page_size` faces. A <script src> works from
file:// where fetch() does not. `index.js` lists every queued face, for checking a reviewer's
stored marks against a changed queue. Cells are built with textContent, never innerHTML, and only
http(s) source links are made clickable."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from functools import lru_cache
from importlib.resources import files

import jinja2
from markupsafe import Markup

PART_STEM = "part-{:05d}"
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


def render_html(*, total: int, pages: int, per_file: int, size: int, thumbs_dir: str, version: str, store: str) -> str:
    """The contact sheet. `thumbs_dir` (relative to the HTML file) holds this `version` of the queue,
    `per_file` pages to a part file; `store` names the browser's store of marks (the decisions CSV,
    one store per project)."""
    meta = {"total": total, "pages": pages, "per_file": per_file, "size": size, "dir": thumbs_dir,
            "version": version, "store": store}
    return _environment().get_template("queue.html").render(
        meta=meta, size=size, cell=max(size + 6, 110), version=version,
        css=Markup(asset("queue.css")), js=Markup(asset("queue.js")))


def _json(data) -> str:
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")


def write_part_js(path, *, part: int, first: int, version: str, columns: int, pages: Iterable[tuple[list[list], bytes]]) -> None:
    """The script of one part: `moeflowPart({...})` with its pages, from page `first` on, each
    {faces: [[face_id, detector, score, url], ...], sprite: base64 JPEG}. Written a page at a time."""
    with open(path, "w", encoding="ascii") as f:
        f.write("moeflowPart(" + _json({"part": part, "first": first, "version": version, "columns": columns})[:-1]
                + ',"pages":[')
        for n, (faces, jpg) in enumerate(pages):
            f.write(("," if n else "") + '{"faces":' + _json(faces) + ',"sprite":"' + base64.b64encode(jpg).decode("ascii") + '"}')
        f.write("]});\n")


def read_part_js(text: str) -> dict:
    """A part script's data (the inverse of write_part_js; for tools and tests)."""
    if not (text.startswith("moeflowPart(") and text.endswith(");\n")):
        raise ValueError("not a moeflowPart script")
    return json.loads(text[len("moeflowPart("):-3])


def write_index_js(path, version: str, face_ids: Iterable[list[str]]) -> None:
    """`moeflowIndex({"version": ..., "ids": [...]})`: every face_id of this version of the queue,
    written as the batches of ids come (the same bytes as one json.dumps of the whole list)."""
    with open(path, "w", encoding="ascii") as f:
        f.write('moeflowIndex({"version":' + _json(version) + ',"ids":[')
        first = True
        for batch in face_ids:
            if batch:
                f.write(("" if first else ",") + _json(batch)[1:-1])
                first = False
        f.write("]});\n")