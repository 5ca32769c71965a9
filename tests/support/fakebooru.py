"""A real HTTP server on 127.0.0.1 that imitates the booru APIs and Getchu, serving the
real illustrations in ../shared/data/real, with fault injection and a log of every request
and response, timed by the server's own clock.

Used by the scrape tests and bench/scrape.py."""

from __future__ import annotations

import collections
import http.server
import json
import socket
import struct
import sys
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image

SHARED = Path(__file__).resolve().parents[3] / "shared"
REAL = SHARED / "data" / "real"
CTYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif"}
CHALLENGE = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>Checking your browser</body></html>"
DEEP_REFUSALS = ("html", "error", "message", "empty")  # how the fake Gelbooru refuses a pid past dapi_max_offset


def variant(data: bytes, tag: str) -> bytes:
    """The same image with a comment holding `tag`: other bytes (another sha256), the same pixels.
    JPEG: a COM segment after SOI; PNG: a tEXt chunk after IHDR."""
    note = tag.encode()
    if data[:2] == b"\xff\xd8":
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(note) + 2) + note + data[2:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        text = b"Comment\0" + note
        chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
        return data[:33] + chunk + data[33:]  # 8 signature + 25 IHDR
    raise ValueError("variant: not a JPEG or PNG")


def bomb_png(side: int = 30000) -> bytes:
    """A PNG whose header claims side×side pixels (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


class FakeBooru:
    """posts: dicts with at least id and `file` (a name under /data/ or /special/)."""

    def __init__(self, images_dir: Path = REAL, robots: str = "User-agent: *\nDisallow: /private/\n",
                 max_page: int = 1000, dapi_max_offset: int | None = None, deep_refusal: str = "html",
                 latency: float = 0.0):
        assert deep_refusal in DEEP_REFUSALS, deep_refusal
        self.images_dir = Path(images_dir)
        self.files = {p.name: p for p in sorted(self.images_dir.iterdir()) if p.suffix.lower() in CTYPES}
        self.variants: dict[str, tuple[str, str]] = {}  # served name -> (real name, tag): see variant()
        self.special: dict[str, tuple[bytes, str]] = {}
        self.robots = robots
        self.max_page = max_page
        self.dapi_max_offset = dapi_max_offset
        self.deep_refusal = deep_refusal
        self.latency = latency  # seconds each file takes to start arriving (a slow CDN); faults answer at once
        self.posts: list[dict] = []
        self.games: dict[str, str] = {}  # getchu id -> html (EUC-JP encoded when served)
        self.faults: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.throttles: list[list] = []  # [path prefix, requests left, Retry-After or None]
        self.log: list[tuple[float, str, str]] = []  # (monotonic time of arrival, path, query)
        self.responses: list[tuple[float, str, int]] = []  # (monotonic time the answer went out, path, status)
        self.user_agents: list[str] = []
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", 0), self._handler())
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- set-up helpers ------------------------------------------------------------------
    def add_real_posts(self, names=None, rating: str = "g", start_id: int = 5000, **extra) -> list[dict]:
        added = []
        for i, name in enumerate(names or list(self.files)):
            with Image.open(self.files[name]) as im:
                w, h = im.size
            post = {"id": start_id - i, "file": f"data/{name}", "md5": "", "rating": rating, "image_width": w,
                    "image_height": h, "file_ext": name.rsplit(".", 1)[1].lower(), "tag_string": "1girl solo",
                    "tag_string_artist": "artist_a", "file_size": self.files[name].stat().st_size, **extra}
            self.posts.append(post)
            added.append(post)
        return added

    def add_special(self, name: str, data: bytes, ctype: str, **post) -> dict:
        self.special[name] = (data, ctype)
        entry = {"id": post.pop("id", 100 + len(self.special)), "file": f"special/{name}", "rating": "g",
                 "tag_string": "1girl", "file_ext": name.rsplit(".", 1)[-1], **post}
        self.posts.append(entry)
        return entry

    def alias(self, name: str, real_name: str) -> None:
        """Serve the real file `real_name` under another file name too."""
        self.files[name] = self.files[real_name]

    def add_variant(self, name: str, real_name: str, tag: str) -> None:
        """Serve under `name` the image `real_name` with other bytes (see variant())."""
        self.variants[name] = (real_name, tag)

    def fault(self, path: str, *actions: str) -> None:
        """Queue actions for the next requests of `path`: '429' (no Retry-After), '429:<secs>',
        '503:<secs>', or a plain status code such as '500'; 'reset'; 'truncate' (half the body,
        Content-Length of the whole); 'truncate-close' (half the body, no Content-Length, then
        close); 'challenge' (200 with a bot-check HTML page); '403-challenge' (403, HTML,
        cf-mitigated: challenge); 'redirect:<url>', 'noai', 'ctype:<type>'; 'pass' (answer as usual)."""
        self.faults[path].extend(actions)

    def throttle(self, prefix: str, n: int, retry_after: str | None = None) -> None:
        """Answer the next n requests of any path under `prefix` with 429."""
        self.throttles.append([prefix, n, retry_after])

    def requests_for(self, prefix: str) -> list[tuple[float, str, str]]:
        return [r for r in self.log if r[1].startswith(prefix)]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # -- the API ---------------------------------------------------------------------------
    def _post_json(self, post: dict) -> dict:
        out = {k: v for k, v in post.items() if k != "file"}
        out["file_url"] = f"{self.url}/{post['file']}" if post.get("file") else None
        return out

    def _danbooru(self, q: dict) -> tuple[int, object]:
        limit = int(q.get("limit", ["20"])[0])
        page = q.get("page", ["1"])[0]
        tags = q.get("tags", [""])[0]
        posts = sorted(self.posts, key=lambda p: -p["id"])
        if "nothing_matches" in tags:
            posts = []
        if page.startswith("b"):
            below = int(page[1:])
            chunk = [p for p in posts if p["id"] < below][:limit]
        else:
            n = int(page)
            if n > self.max_page:
                return 410, {"success": False, "message": f"You cannot go beyond page {self.max_page}."}
            chunk = posts[(n - 1) * limit: n * limit]
        return 200, [self._post_json(p) for p in chunk]

    def _dapi(self, q: dict) -> tuple[int, object]:
        limit = int(q.get("limit", ["100"])[0])
        pid = int(q.get("pid", ["0"])[0])
        tags = q.get("tags", [""])[0].split()
        posts = sorted(self.posts, key=lambda p: -p["id"])
        for t in tags:
            if t.startswith("id:<"):
                posts = [p for p in posts if p["id"] < int(t[4:])]
        if self.dapi_max_offset is not None and pid * limit > self.dapi_max_offset:
            if self.deep_refusal == "html":  # what a PHP error page looks like to a JSON client
                return 200, "<html><body>Too deep! Pull it back some. Holy fuck.</body></html>"
            if self.deep_refusal in ("error", "message"):  # an HTTP error, or an error object with 200
                return 400 if self.deep_refusal == "error" else 200, {"success": False, "message": "Too deep!"}
            return 200, {"@attributes": {"limit": limit, "offset": pid * limit, "count": len(posts)}, "post": []}
        chunk = posts[pid * limit:(pid + 1) * limit]
        out = [{"id": p["id"], "file_url": f"{self.url}/{p['file']}", "tags": p.get("tag_string", ""),
                "rating": {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}[p.get("rating", "g")],
                "width": p.get("image_width"), "height": p.get("image_height")} for p in chunk]
        return 200, {"@attributes": {"limit": limit, "offset": pid * limit, "count": len(posts)}, "post": out}

    def _handler(self):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str, headers: dict | None = None, length: int | None = None,
                      framed: bool = True):
                with outer._lock:  # stamped before it goes out: no client can have read it earlier
                    outer.responses.append((time.monotonic(), urlsplit(self.path).path, code))
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                if framed:
                    self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, obj) -> None:
                self._send(code, json.dumps(obj).encode(), "application/json")

            def do_GET(self):  # noqa: N802
                parts = urlsplit(self.path)
                path, q = parts.path, parse_qs(parts.query)
                with outer._lock:
                    outer.log.append((time.monotonic(), path, parts.query))
                    outer.user_agents.append(self.headers.get("User-Agent", ""))
                    action = outer.faults[path].popleft() if outer.faults.get(path) else None
                    for t in outer.throttles:
                        if not action and t[1] > 0 and path.startswith(t[0]):
                            t[1] -= 1
                            action = "429" if t[2] is None else f"429:{t[2]}"
                headers = {}
                if action:
                    code, _, retry_after = action.partition(":")
                    if code in ("429", "503") and (retry_after or code == "429"):
                        return self._send(int(code), b"slow down", "text/plain",
                                          {"Retry-After": retry_after} if retry_after else {})
                    if action.isdigit():
                        return self._send(int(action), b"oops", "text/plain")
                    if action == "403-challenge":
                        return self._send(403, CHALLENGE, "text/html; charset=UTF-8", {"cf-mitigated": "challenge"})
                    if action == "challenge":
                        return self._send(200, CHALLENGE, "text/html; charset=UTF-8")
                    if action == "reset":
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        self.close_connection = True
                        self.connection.close()
                        return
                    if action.startswith("redirect:"):
                        return self._send(302, b"", "text/plain", {"Location": action.split(":", 1)[1]})
                    if action == "noai":
                        headers["X-Robots-Tag"] = "noai, noimageai"
                if path == "/robots.txt":
                    return self._send(200, outer.robots.encode(), "text/plain")
                if path == "/posts.json":
                    return self._json(*outer._danbooru(q))
                if path == "/index.php" and q.get("page") == ["dapi"]:
                    code, obj = outer._dapi(q)
                    if isinstance(obj, str):
                        return self._send(code, obj.encode(), "text/html; charset=UTF-8")
                    return self._json(code, obj)
                if path == "/soft.phtml":
                    gid = q.get("id", [""])[0]
                    if q.get("gc") != ["gc"]:
                        body = "<html><body>年齢認証: 18歳以上ですか?</body></html>".encode("euc_jp")
                    elif gid in outer.games:
                        body = outer.games[gid].encode("euc_jp")
                    else:
                        return self._send(404, b"no such game", "text/plain")
                    return self._send(200, body, "text/html; charset=EUC-JP")
                body, ctype = None, None
                if path.startswith("/data/") or path.startswith("/private/") or path.startswith("/brandnew/"):
                    name = path.rsplit("/", 1)[1]
                    f = outer.files.get(name)
                    if f:
                        body, ctype = f.read_bytes(), CTYPES[f.suffix.lower()]
                    elif name in outer.variants:
                        real, tag = outer.variants[name]
                        f = outer.files[real]
                        body, ctype = variant(f.read_bytes(), tag), CTYPES[f.suffix.lower()]
                elif path.startswith("/special/"):
                    body, ctype = outer.special.get(path[len("/special/"):], (None, None))
                if body is None:
                    return self._send(404, b"not found", "text/plain")
                if outer.latency:
                    time.sleep(outer.latency)
                if action and action.startswith("ctype:"):
                    ctype = action.split(":", 1)[1]
                if action in ("truncate", "truncate-close"):
                    self._send(200, body[: len(body) // 2], ctype, headers, length=len(body),
                               framed=action == "truncate")
                    self.close_connection = True
                    return
                return self._send(200, body, ctype, headers)

        return Handler


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that hangs up mid-answer (a cut-off test, a closed session) is no server error."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


GETCHU_PAGE = """<html><head><meta http-equiv="Content-Type" content="text/html; charset=EUC-JP">
<title>{title}</title></head><body>
<h1 id="soft-title">{title}</h1>
<div class="tabletitle">キャラクター</div>
<table>{rows}</table>
</body></html>"""

GETCHU_ROW = """<tr><td><a href="./brandnew/{gid}/{file}" class="highslide"><img src="./brandnew/{gid}/thumb_charas{n}.jpg"></a></td>
<td><h2 class="chara-name">{name}<br>CV：声優{n}</h2><dl>profile</dl></td></tr>"""


def getchu_page(gid: str, title: str, charas: list[tuple[str, str]]) -> str:
    """charas: [(file name served under /brandnew/, character name)]. The files must be
    named like Getchu's standing pictures: c<id>chara<n>.<ext> (the server looks up the
    name after the last '/' in the shared images, so pass real file names and alias them)."""
    rows = "".join(GETCHU_ROW.format(gid=gid, file=f, n=n, name=name) for n, (f, name) in enumerate(charas, 1))
    return GETCHU_PAGE.format(title=title, rows=rows)
