"""Per-site extractors (gallery-dl style): each declares its URL patterns, page size,
deep-paging limit and minimum request interval, and yields `Post`s. Every HTTP call goes
through the shared PoliteSession, configured from scrape.http and the site's declarations."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup

from tasks.errors import ConfigError, Rejected, SourceError
from tasks.http import PRODUCT, VERSION, FetchFailed, HostUnreachable, HttpSettings, PoliteSession
from tasks.params.scrape import ScrapeConfig
from tasks.scrape.local import signature

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
    sha256: str | None = None  # the bytes expected (the release source): anything else is rejected
    stat: tuple[int, ...] | None = None  # folder source: the file's type, size, mtime (tasks.scrape.local.signature)


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


def _error_object(data) -> str | None:
    """The message of an API error object ({"success": false, "message": ...}), or None."""
    if isinstance(data, dict) and "post" not in data and (data.get("success") is False or "message" in data):
        return str(data.get("message") or data)
    return None


def _ext(url: str | None) -> str | None:
    if not url:
        return None
    suffix = os.path.splitext(urlsplit(url).path)[1].lower().lstrip(".")
    return suffix or None


class Extractor:
    """Base class: `name` selects it from params (scrape.source).

    What a site declares (gallery-dl style); scrape.posts_per_page and scrape.page_limit
    override the first two, and the minimum interval holds whatever scrape.http.rate_limit says:
    - `site`: a pattern for the base URLs of the public sites this source knows;
    - `site_file_hosts`: where those sites serve files from (allowed as well, for them only);
    - `page_size` / `max_page_size`: posts per listing page, by default and at most;
    - `max_page` / `max_offset`: the deepest page number, or post offset, the API serves;
    - `min_interval`: seconds between requests that the site asks for (its own sites only)."""

    name: ClassVar[str]
    registry: ClassVar[dict[str, type["Extractor"]]] = {}
    uses_http: ClassVar[bool] = True
    site: ClassVar[str | None] = None
    site_file_hosts: ClassVar[tuple[str, ...]] = ()
    page_size: ClassVar[int] = 100
    max_page_size: ClassVar[int | None] = None
    max_page: ClassVar[int | None] = None
    max_offset: ClassVar[int | None] = None
    min_interval: ClassVar[float] = 0.0

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Extractor.registry[cls.name] = cls

    def __init__(self, cfg: ScrapeConfig):
        self.cfg = cfg
        self.base = cfg.base_url.rstrip("/")
        self.known_site = bool(self.site and re.match(self.site + r"(?:/|$)", self.base, re.I))
        self.per_page = cfg.posts_per_page or self.page_size
        if self.known_site and self.max_page_size and self.per_page > self.max_page_size:
            raise ConfigError(f"scrape.posts_per_page: {self.name} serves at most {self.max_page_size} posts "
                              f"per page, got {self.per_page}")
        self.page_limit = cfg.page_limit or self.default_page_limit()
        self.http = PoliteSession(self.http_settings(), self.allowed_hosts(), auth=self.auth()) if self.uses_http else None

    def default_page_limit(self) -> int:
        limits = [self.max_page or 0, (self.max_offset or 0) // self.per_page]
        return max(1, min(x for x in limits if x)) if any(limits) else 1_000_000

    def allowed_hosts(self) -> set[str]:
        hosts = {urlsplit(self.base).hostname or "", *self.cfg.file_hosts}
        return hosts | set(self.site_file_hosts) if self.known_site else hosts

    def user_agent(self) -> str:
        return f"{PRODUCT}/{VERSION} (+mailto:{self.cfg.http.contact})"

    def http_settings(self) -> HttpSettings:
        h = self.cfg.http
        interval = 1.0 / h.rate_limit if h.rate_limit > 0 else 0.0
        if self.known_site and interval < self.min_interval:
            log.warning("scrape.http.rate_limit %s is faster than %s asks (one request per %gs): using that",
                        f"{h.rate_limit:g}/s" if h.rate_limit else "0 (none)", urlsplit(self.base).hostname,
                        self.min_interval)
            interval = self.min_interval
        return HttpSettings(
            user_agent=self.user_agent(), robots_agent=PRODUCT, interval=interval, pool_size=max(4, 2 * h.concurrency),
            connect_timeout=h.connect_timeout, read_timeout=h.read_timeout, retries=h.retries, backoff=h.backoff,
            backoff_max=h.backoff_max, retry_after_max=h.retry_after_max,
            max_consecutive_failures=h.max_consecutive_failures, max_bytes=h.max_bytes,
            respect_robots=h.respect_robots, key="scrape.http")

    def login(self) -> str | None:
        return os.environ.get(self.cfg.login_env) or None

    def auth(self) -> tuple[str, str] | None:
        login, key = self.login(), os.environ.get(self.cfg.api_key_env)
        return (login, key) if login and key else None

    def posts(self) -> Iterator[Post]:
        raise NotImplementedError

    def recorded_faces(self) -> dict[str, list[dict]]:
        """image_id -> faces to crop as recorded instead of detecting (the release source)."""
        return {}

    def _unreachable(self, what: object) -> SourceError:
        return SourceError(f"{self.name}: {what}. Check scrape.base_url and the network; "
                           "without internet, use scrape.source: folder")

    def _listing(self, url: str, params: dict, *, refusable: bool = False) -> tuple[Any, str | None]:
        """Fetch one listing page: (data, None), or with `refusable` (None, the site's words) when
        the site refuses it. Any other failure stops the stage with a clear message."""
        try:
            return self.http.get_json(url, params=params), None
        except HostUnreachable as e:
            raise self._unreachable(e) from None
        except Rejected as e:
            if e.reason == "robots_disallowed":
                raise SourceError(f"{self.name}: robots.txt disallows {url}") from None
            if refusable:
                return None, str(e)
            raise SourceError(f"{self.name}: listing {url} refused ({e})") from None
        except FetchFailed as e:
            raise self._unreachable(f"cannot reach {url}: {e}") from None


    # -- paging (gallery-dl's `_pagination`): one loop, the sites' differences as data and small hooks --
    page_param: ClassVar[str] = "page"  # the listing's page-number parameter
    first_page: ClassVar[int] = 1  # its first value
    refusals: ClassVar[bool] = False  # whether the site may refuse a deep page (then: the cursor)

    def _pagination(self, endpoint: str, params: dict) -> Iterator[dict]:
        """The raw posts of a listing, each once: page numbers up to the page limit, then a cursor below
        the smallest post id seen (`cursor_params`), from the first page the site refuses on; stops at
        a short page or a page with nothing new."""
        page, cursor, seen, deep = self.first_page, None, set(), False
        while True:
            if not deep and page - self.first_page >= self.page_limit and cursor is not None:
                deep = True
            query = self.cursor_params(params, cursor) if deep else {**params, self.page_param: page}
            data, refused = self._listing(self.base + endpoint, query,
                                          refusable=self.refusals and not deep and cursor is not None)
            items = self.page_posts(data) if refused is None else []
            refused = refused or self.refusal(data, items, page, deep, cursor)
            if refused is not None:
                log.info("%s: the site refuses %s %d (%s): going on with the cursor below id %d", self.name,
                         self.page_param, page, refused, cursor)
                deep = True
                continue
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
                yield raw
            if len(items) < self.per_page or not fresh:
                return
            page += 1

    def page_posts(self, data) -> list[dict]:
        """The raw posts of one listing page (an error object is a SourceError)."""
        raise NotImplementedError

    def refusal(self, data, items: list[dict], page: int, deep: bool, cursor: int | None) -> str | None:
        """Why the site refused this numbered page (so paging goes on with the cursor), or None."""
        return None

    def cursor_params(self, params: dict, cursor: int) -> dict:
        """The listing's params for the posts below `cursor`."""
        raise NotImplementedError


class Danbooru(Extractor):
    """Danbooru JSON API: /posts.json, page numbers up to page_limit, then page=b<id> cursors."""

    name = "danbooru"
    endpoint = "/posts.json"
    site = r"https?://(?:danbooru|safebooru|testbooru)\.donmai\.us"
    site_file_hosts = ("*.donmai.us",)
    page_size = max_page_size = 200  # the API's most per page
    max_page = 1000  # "You cannot go beyond page 1000" (members); then cursors
    min_interval = 0.1  # at most 10 requests/s, the site's read limit

    def user_agent(self) -> str:
        """Danbooru asks scripts to name the account they run for."""
        login = self.login()
        if login:
            return f"{PRODUCT}/{VERSION} (by {login} on Danbooru; +mailto:{self.cfg.http.contact})"
        return super().user_agent()

    def posts(self) -> Iterator[Post]:
        for raw in self._pagination(self.endpoint, {"tags": self.cfg.tags, "limit": self.per_page}):
            yield self.parse(raw)

    def page_posts(self, data) -> list[dict]:
        if isinstance(data, dict):  # an error object: {"success": false, "message": ...}
            raise SourceError(f"danbooru: {_error_object(data) or data}")
        return data or []

    def cursor_params(self, params: dict, cursor: int) -> dict:
        return {**params, "page": f"b{cursor}"}

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
    """Gelbooru dapi: index.php?page=dapi&s=post&q=index&json=1; pid paging, then an `id:<N`
    cursor in the tags: at the documented offset limit, or as soon as the site refuses a deep pid
    (an error, a page that is not JSON, or an empty page while the count says there are more)."""

    name = "gelbooru"
    endpoint = "/index.php"
    site = r"https?://(?:www\.)?gelbooru\.com"
    site_file_hosts = ("*.gelbooru.com",)
    page_size = max_page_size = 100
    max_offset = 20000  # pid * limit beyond this is refused
    min_interval = 0.5

    page_param, first_page, refusals = "pid", 0, True

    def posts(self) -> Iterator[Post]:
        params = {"page": "dapi", "s": "post", "q": "index", "json": 1, "tags": self.cfg.tags, "limit": self.per_page}
        creds = self.auth()
        if creds:
            params.update({"user_id": creds[0], "api_key": creds[1]})
        for raw in self._pagination(self.endpoint, params):
            yield self.parse(raw)

    def page_posts(self, data) -> list[dict]:
        items = data.get("post", []) if isinstance(data, dict) else (data or [])
        return [items] if isinstance(items, dict) else items  # a single post is not wrapped in a list

    def refusal(self, data, items: list[dict], page: int, deep: bool, cursor: int | None) -> str | None:
        error = _error_object(data)
        if error and (deep or cursor is None):
            raise SourceError(f"gelbooru: {error}")
        if error:
            return error
        count = _int((data.get("@attributes") or {}).get("count")) if isinstance(data, dict) else None
        if not items and not deep and page > 0 and count and count > page * self.per_page:
            return f"an empty page at offset {page * self.per_page} of {count} posts"
        return None

    def cursor_params(self, params: dict, cursor: int) -> dict:
        return {**params, "tags": f"{self.cfg.tags} id:<{cursor}".strip(), "pid": 0}

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
    site = r"https?://(?:www\.)?getchu\.com"
    site_file_hosts = ("*.getchu.com",)
    min_interval = 1.0  # a shop, not an API: one page a second

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
            except HostUnreachable as e:
                raise self._unreachable(e) from None
            except Rejected as e:
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

    def __init__(self, cfg: ScrapeConfig):
        super().__init__(cfg)
        if not Path(cfg.folder).is_dir():  # before the stage touches anything
            raise SourceError(f"scrape.folder: {cfg.folder} is not a directory")

    def posts(self) -> Iterator[Post]:
        root = Path(self.cfg.folder)
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
                stat = signature(str(path))  # before its bytes are read: a change after it is noticed next run
                meta = _sidecar(path, index)
                artist = meta.get("artist") or meta.get("tag_string_artist") or None
                yield Post(
                    source=self.name, post_id=str(meta.get("id") or path.relative_to(root).as_posix()),
                    # the file's place in the folder, not this machine's path: a rebuild elsewhere gives the same manifest
                    file_url=f"file:{path.relative_to(root).as_posix()}",
                    page_url=meta.get("page_url") or meta.get("source") or None,
                    tags=_tags(meta), rating=_rating(meta.get("rating")), artist=artist,
                    width=_int(meta.get("width") or meta.get("image_width")),
                    height=_int(meta.get("height") or meta.get("image_height")),
                    ext=path.suffix.lower().lstrip("."), local_path=str(path),
                    stat=tuple(stat) if stat is not None else None,
                )
