"""Per-site extractors (gallery-dl style): each declares its endpoint and paging and
yields `Post`s. Every HTTP call goes through the shared PoliteSession."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup

from tasks.errors import SourceError
from tasks.http import FetchFailed, FetchRejected, PoliteSession
from tasks.scrape.config import ScrapeConfig

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif"}


@dataclass(frozen=True)
class Post:
    source: str
    post_id: str
    file_url: str | None  # http(s) URL, or file:// for the folder source
    page_url: str | None = None
    tags: tuple[str, ...] = ()
    rating: str | None = None  # normalised: general | sensitive | questionable | explicit
    artist: str | None = None
    width: int | None = None
    height: int | None = None
    ext: str | None = None  # as the source reports it, lower case, no dot
    title: str | None = None  # getchu: the game
    character: str | None = None  # getchu: the character's name
    local_path: str | None = None  # folder source


RATING_NAMES = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit",
                "general": "general", "safe": "general", "sensitive": "sensitive",
                "questionable": "questionable", "explicit": "explicit"}


def _rating(value) -> str | None:
    return RATING_NAMES.get(str(value).strip().lower()) if value not in (None, "") else None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _ext(url: str | None) -> str | None:
    if not url:
        return None
    suffix = os.path.splitext(urlsplit(url).path)[1].lower().lstrip(".")
    return suffix or None


class Extractor:
    """Base class: `name` selects it from params (scrape.source)."""

    name: ClassVar[str]
    registry: ClassVar[dict[str, type["Extractor"]]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Extractor.registry[cls.name] = cls

    def __init__(self, cfg: ScrapeConfig, http: PoliteSession | None):
        self.cfg = cfg
        self.http = http
        self.base = cfg.base_url.rstrip("/")

    uses_http: ClassVar[bool] = True

    @classmethod
    def allowed_hosts(cls, cfg: ScrapeConfig) -> set[str]:
        return {urlsplit(cfg.base_url).hostname or "", *cfg.file_hosts}

    def auth(self) -> tuple[str, str] | None:
        login, key = os.environ.get(self.cfg.login_env), os.environ.get(self.cfg.api_key_env)
        return (login, key) if login and key else None

    def posts(self) -> Iterator[Post]:
        raise NotImplementedError

    def _listing(self, url: str, params: dict):
        """Fetch one listing page; failures here stop the stage with a clear message."""
        try:
            return self.http.get_json(url, params=params)
        except FetchRejected as e:
            if e.reason == "robots_disallowed":
                raise SourceError(f"{self.name}: robots.txt disallows {url}") from None
            raise SourceError(f"{self.name}: listing {url} refused ({e})") from None
        except FetchFailed as e:
            raise SourceError(f"{self.name}: cannot reach {url}: {e}. Check scrape.base_url and the network; "
                              "without internet, use scrape.source: folder") from None


class Danbooru(Extractor):
    """Danbooru JSON API: /posts.json, page numbers up to page_limit, then page=b<id> cursors."""

    name = "danbooru"
    endpoint = "/posts.json"

    def posts(self) -> Iterator[Post]:
        page, cursor, seen = 1, None, set()
        limit = self.cfg.posts_per_page
        while True:
            page_param = page if page <= self.cfg.page_limit else f"b{cursor}"
            data = self._listing(self.base + self.endpoint, {"tags": self.cfg.tags, "limit": limit, "page": page_param})
            if isinstance(data, dict):  # an error object: {"success": false, "message": ...}
                raise SourceError(f"danbooru: {data.get('message') or data}")
            if not data:
                return
            for raw in data:
                pid = _int(raw.get("id"))
                if pid is None or pid in seen:
                    continue
                seen.add(pid)
                cursor = pid if cursor is None else min(cursor, pid)
                yield self.parse(raw)
            if len(data) < limit:
                return
            page += 1

    def parse(self, raw: dict) -> Post:
        file_url = raw.get("file_url") or None
        if file_url:
            file_url = urljoin(self.base + "/", file_url)
        artists = (raw.get("tag_string_artist") or "").split()
        return Post(
            source=self.name, post_id=str(raw.get("id")), file_url=file_url,
            page_url=f"{self.base}/posts/{raw.get('id')}",
            tags=tuple((raw.get("tag_string") or "").split()), rating=_rating(raw.get("rating")),
            artist=" ".join(artists) or None, width=_int(raw.get("image_width")), height=_int(raw.get("image_height")),
            ext=(raw.get("file_ext") or _ext(file_url) or None),
        )


class Gelbooru(Extractor):
    """Gelbooru / Safebooru dapi: index.php?page=dapi&s=post&q=index&json=1; pid paging,
    then an `id:<N` cursor in the tags past page_limit."""

    name = "gelbooru"
    endpoint = "/index.php"

    def posts(self) -> Iterator[Post]:
        pid, cursor, seen = 0, None, set()
        limit = self.cfg.posts_per_page
        creds = self.auth()
        while True:
            tags = self.cfg.tags
            page = pid
            if pid >= self.cfg.page_limit:
                tags, page = f"{tags} id:<{cursor}".strip(), 0
            params = {"page": "dapi", "s": "post", "q": "index", "json": 1, "tags": tags, "pid": page, "limit": limit}
            if creds:
                params.update({"user_id": creds[0], "api_key": creds[1]})
            data = self._listing(self.base + self.endpoint, params)
            items = data.get("post", []) if isinstance(data, dict) else (data or [])
            if isinstance(items, dict):  # a single post is not wrapped in a list
                items = [items]
            if not items:
                return
            fresh = 0
            for raw in items:
                post_id = _int(raw.get("id"))
                if post_id is None or post_id in seen:
                    continue
                seen.add(post_id)
                fresh += 1
                cursor = post_id if cursor is None else min(cursor, post_id)
                yield self.parse(raw)
            if len(items) < limit or not fresh:
                return
            pid += 1

    def parse(self, raw: dict) -> Post:
        file_url = raw.get("file_url") or None
        if not file_url and raw.get("directory") and raw.get("image"):
            file_url = f"{self.base}/images/{raw['directory']}/{raw['image']}"
        if file_url:
            file_url = urljoin(self.base + "/", file_url)
        return Post(
            source=self.name, post_id=str(raw.get("id")), file_url=file_url,
            page_url=f"{self.base}/index.php?page=post&s=view&id={raw.get('id')}",
            tags=tuple((raw.get("tags") or "").split()), rating=_rating(raw.get("rating")),
            artist=None, width=_int(raw.get("width")), height=_int(raw.get("height")), ext=_ext(file_url),
        )


GAME_COLUMNS = {"id": ("id", "game_id"), "title": ("title", "gamename", "name"),
                "sellday": ("sellday", "release_date"), "url": ("url", "links", "getchu_url", "getchu", "link")}


def read_game_list(path: str) -> list[dict]:
    """The Getchu game list: a CSV shaped like an ErogameScape SQL export."""
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"scrape.getchu_games: {path} not found (a CSV with id, title, sellday and Getchu URL)")
    with open(p, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = {h.strip().lower(): h for h in (reader.fieldnames or [])}
        cols = {}
        for want, names in GAME_COLUMNS.items():
            found = next((header[n] for n in names if n in header), None)
            if found is None and want in ("id", "url"):
                raise SourceError(f"{path}: no {want} column (expected one of {', '.join(names)})")
            cols[want] = found
        rows = []
        for line, row in enumerate(reader, start=2):
            url = (row.get(cols["url"]) or "").strip()
            m = re.search(r"[?&]id=(\d+)", url) or re.fullmatch(r"(\d+)", url)
            if not m:
                raise SourceError(f"{path}, line {line}: cannot find a Getchu id in {url!r}")
            rows.append({"getchu_id": m.group(1), "title": (row.get(cols["title"]) or "").strip() if cols["title"] else "",
                         "sellday": (row.get(cols["sellday"]) or "").strip() if cols["sellday"] else ""})
    return rows


CHARA_IMAGE = re.compile(r"chara\d+\.(?:jpe?g|png|gif|webp)$", re.I)


def parse_getchu_page(html: bytes, page_url: str, encoding: str | None = None) -> tuple[str | None, list[tuple[str, str | None]]]:
    """Title and [(standing-picture URL, character name)] from a Getchu soft.phtml page."""
    soup = BeautifulSoup(html, "html.parser", from_encoding=encoding or "euc_jp")
    title_el = soup.select_one("#soft-title") or soup.find("title")
    title = " ".join(title_el.get_text(" ", strip=True).split()) if title_el else None
    found: dict[str, str | None] = {}
    for el in soup.find_all(["a", "img"]):
        src = el.get("href") if el.name == "a" else el.get("src")
        if not src or not CHARA_IMAGE.search(src.split("?")[0]):
            continue
        url = urljoin(page_url, src)
        if url in found:
            continue
        row = el.find_parent("tr") or el.parent
        name_el = row.select_one(".chara-name") if row else None
        name = None
        if name_el:
            name = next((s.strip() for s in name_el.stripped_strings), None)
        found[url] = name
    return title, list(found.items())


class Getchu(Extractor):
    """The paper's source: a game list CSV, then each game's page (EUC-JP, age gate via gc=gc)."""

    name = "getchu"
    endpoint = "/soft.phtml"

    def posts(self) -> Iterator[Post]:
        games = read_game_list(self.cfg.getchu_games)
        if not games:
            raise SourceError(f"{self.cfg.getchu_games}: the game list is empty")
        for game in games:
            if self.cfg.min_sellday and game["sellday"] and game["sellday"][:10] < self.cfg.min_sellday:
                continue
            gid = game["getchu_id"]
            page_url = f"{self.base}{self.endpoint}?id={gid}&gc=gc"
            try:
                resp = self.http.get_bytes(page_url)
            except FetchRejected as e:
                log.warning("getchu %s: page skipped (%s)", gid, e)
                continue
            except FetchFailed as e:
                log.warning("getchu %s: page failed (%s)", gid, e)
                continue
            charset = resp.encoding if "charset" in resp.headers.get("Content-Type", "").lower() else None
            title, charas = parse_getchu_page(resp.content, page_url, charset)
            for n, (url, name) in enumerate(charas, start=1):
                yield Post(source=self.name, post_id=f"{gid}/{n}", file_url=url, page_url=page_url,
                           title=game["title"] or title, character=name, ext=_ext(url))


def _sidecar(path: Path, index: dict[str, dict]) -> dict:
    for cand in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if cand.is_file():
            try:
                return json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                log.warning("%s: sidecar unreadable (%s), ignored", cand, e)
    return index.get(str(path), {})


def _tags(meta: dict) -> tuple[str, ...]:
    tags = meta.get("tags", meta.get("tag_string", ()))
    return tuple(tags.split() if isinstance(tags, str) else map(str, tags or ()))


class Folder(Extractor):
    """Import images from a local tree, with optional sidecars: `<file>.json`, `<stem>.json`,
    or a `metadata.jsonl` at the root with one object per line naming `file_name`."""

    name = "folder"
    uses_http = False

    @classmethod
    def allowed_hosts(cls, cfg):
        return set()

    def posts(self) -> Iterator[Post]:
        root = Path(self.cfg.folder)
        if not root.is_dir():
            raise SourceError(f"scrape.folder: {root} is not a directory")
        index: dict[str, dict] = {}
        meta_file = root / "metadata.jsonl"
        if meta_file.is_file():
            for n, line in enumerate(meta_file.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    index[str(root / obj["file_name"])] = obj
                except (ValueError, KeyError, TypeError):
                    log.warning("%s line %d: not a JSON object with file_name, ignored", meta_file, n)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fname in sorted(filenames):
                path = Path(dirpath) / fname
                if path.suffix.lower() not in IMAGE_EXTS:
                    continue
                meta = _sidecar(path, index)
                artist = meta.get("artist") or meta.get("tag_string_artist") or None
                yield Post(
                    source=self.name, post_id=str(meta.get("id") or path.relative_to(root).as_posix()),
                    file_url=path.resolve().as_uri(), page_url=meta.get("page_url") or meta.get("source") or None,
                    tags=_tags(meta), rating=_rating(meta.get("rating")), artist=artist,
                    width=_int(meta.get("width") or meta.get("image_width")),
                    height=_int(meta.get("height") or meta.get("image_height")),
                    ext=path.suffix.lower().lstrip("."), local_path=str(path),
                )
