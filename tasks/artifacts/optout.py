"""optout.csv: the takedown requests, read strictly, and matched against posts and images.

One row per request. Columns (any order; the CSV dialects the review CSV accepts: UTF-8 with or
without a BOM, `,` `;` or tab, CRLF, quoted cells, a leading `'` before a formula character):

    date      YYYY-MM-DD the request came in (required)
    reason    why, in words: "the artist's e-mail of 2026-11-30", "DMCA notice 12" (required)
    artist    an artist's name as the source spells it (a Danbooru artist tag)
    tag       a post tag: every post carrying it
    url       a post's file URL or its page URL (http or https)
    source    with post_id: one post of one source (danbooru, gelbooru, getchu, folder)
    post_id
    image_id  the sha256 of an image's bytes (the manifest's image_id, the release's sha256)
    note      free text

A row fills exactly one criterion (source and post_id count as one). Every problem is reported, one
line each naming the file, the line and the value, and nothing is changed (OptoutError).

Matching is forgiving where people are: artist and tag names ignore case and take spaces for
underscores; URLs compare without the fragment, with http = https, the host in lower case, no
default port, no trailing slash and the query's parameters in any order (a page URL with a query,
`…/posts/123?q=1girl`, also matches the post's plain `…/posts/123`)."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit

from tasks.artifacts.decisions import read_csv
from tasks.errors import OptoutError

COLUMNS = ("date", "reason", "artist", "tag", "url", "source", "post_id", "image_id", "note")
REQUIRED = ("date", "reason")
CRITERIA = ("artist", "tag", "url", "source", "post_id", "image_id")
SOURCES = ("danbooru", "gelbooru", "getchu", "folder")  # what a manifest's `source` can say
SHA256 = re.compile(r"[0-9a-f]{64}")
_NUMBERISH = re.compile(r"[-+]?\d+(?:[.,]\d+)?(?:E[-+]?\d+)?", re.IGNORECASE)
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
FUTURE_SLACK = datetime.timedelta(days=1)  # a date from another time zone's today is fine


def name_key(value: str) -> str:
    """An artist or tag name as matched: lower case, runs of whitespace as one underscore."""
    return "_".join(value.split()).lower()


def url_key(url: str) -> tuple[str, str] | None:
    """(scheme-less base, sorted query) of an http(s) URL, or None for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if port is not None and port not in (80, 443):
        host = f"{host}:{port}"
    path = parts.path.rstrip("/") or "/"
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return f"//{host}{path}", query


@dataclass(frozen=True)
class Request:
    """One row of optout.csv."""

    file: str
    line: int
    date: str
    reason: str
    kind: str  # artist | tag | url | post | image_id
    value: str  # as written; a post is "source post_id"
    note: str = ""

    def describe(self) -> str:
        return f"{self.file} line {self.line} ({self.kind} {self.value})"

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "date": self.date, "reason": self.reason, "kind": self.kind,
                "value": self.value}


@dataclass(frozen=True)
class Subject:
    """What a request can match: a listed post, a kept image, a release row."""

    source: str | None = None
    post_id: str | None = None
    url: str | None = None
    page_url: str | None = None
    artist: str | None = None
    tags: tuple[str, ...] = ()
    image_id: str | None = None

    @classmethod
    def of(cls, rec: dict, image_id: str | None = None) -> "Subject":
        """From a manifest row, a journal record or a release row (a release calls it sha256)."""
        tags = rec.get("tags") or ()
        return cls(rec.get("source"), None if rec.get("post_id") is None else str(rec["post_id"]),
                   rec.get("url"), rec.get("page_url"), rec.get("artist"),
                   tuple(tags.split() if isinstance(tags, str) else tags),
                   image_id or rec.get("image_id") or rec.get("sha256"))

    def artist_keys(self) -> set[str]:
        if not self.artist:
            return set()
        return {name_key(a) for a in self.artist.split()} | {name_key(self.artist)}


class Requests:
    """The validated rows of optout.csv, indexed by what they match."""

    def __init__(self, path: str | Path, rows: Iterable[Request] = ()):
        self.path = str(path)
        self.rows = tuple(rows)
        self._artist: dict[str, Request] = {}
        self._tag: dict[str, Request] = {}
        self._url: dict[tuple[str, str], Request] = {}
        self._url_base: dict[str, Request] = {}  # rows whose URL has a query, by base: for subjects without one
        self._post: dict[tuple[str, str], Request] = {}
        self._image: dict[str, Request] = {}
        for r in self.rows:  # the first row of each value wins: it is the one a match names
            if r.kind == "artist":
                self._artist.setdefault(name_key(r.value), r)
            elif r.kind == "tag":
                self._tag.setdefault(name_key(r.value), r)
            elif r.kind == "url":
                key = url_key(r.value)
                self._url.setdefault(key, r)
                self._url_base.setdefault(key[0], r)
            elif r.kind == "post":
                source, post_id = r.value.split(" ", 1)
                self._post.setdefault((source, post_id), r)
            else:
                self._image.setdefault(r.value, r)

    def __bool__(self) -> bool:
        return bool(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def image_ids(self) -> set[str]:
        return set(self._image)

    def match(self, s: Subject) -> Request | None:
        """The first row (in file order) that names the subject, or None."""
        if not self.rows:
            return None
        hits = [self._artist.get(a) for a in s.artist_keys()]
        hits += [self._tag.get(name_key(t)) for t in s.tags]
        for u in (s.url, s.page_url):
            key = url_key(u) if u else None
            if key is not None:
                hits.append(self._url.get(key))
                if not key[1]:
                    hits.append(self._url_base.get(key[0]))
        if s.source is not None and s.post_id is not None:
            hits.append(self._post.get((s.source, s.post_id)))
        if s.image_id:
            hits.append(self._image.get(s.image_id))
        found = [h for h in hits if h is not None]
        return min(found, key=lambda r: r.line) if found else None


def _problem(kind: str, value: str) -> str | None:
    """Why a criterion's value is unusable, or None."""
    if kind in ("artist", "tag"):
        return None if name_key(value) else f"{kind} is blank"
    if kind == "url":
        if url_key(value) is None:
            hint = (" (a folder import's file: URL is no web address: use source,post_id or image_id)"
                    if value.strip().lower().startswith("file:") else "")
            return f"url {value!r} is not an http(s) URL{hint}"
        return None
    if kind == "image_id":
        if SHA256.fullmatch(value):
            return None
        hint = "; the spreadsheet turned it into a number: import the column as Text" if _NUMBERISH.fullmatch(value) else ""
        return f"image_id {value!r} is not a sha256 (64 hex digits){hint}"
    return None


def _date_problem(value: str, today: datetime.date) -> str | None:
    if not DATE.fullmatch(value):
        return f"date {value!r} is not a date (YYYY-MM-DD)"
    try:
        day = datetime.date.fromisoformat(value)
    except ValueError:
        return f"date {value!r} is not a date of the calendar"
    if day > today + FUTURE_SLACK:
        return f"date {value!r} is in the future"
    return None


def read_requests(path: str | Path, today: datetime.date | None = None) -> Requests:
    """Read and validate optout.csv; OptoutError lists every problem, one line each."""
    path = Path(path)
    if not path.exists():
        raise OptoutError(f"{path}: file not found; it is git-tracked and starts as the header line "
                          f"{','.join(COLUMNS)}")
    today = today or datetime.date.today()
    problems: list[str] = []
    table = read_csv(path, COLUMNS, key="date", required=REQUIRED, expected=COLUMNS, error=OptoutError,
                     problems=problems)
    if not set(CRITERIA) & set(table.header):
        raise OptoutError(f"{path}: line 1: no column to match by (one of {', '.join(CRITERIA)})")
    rows = []
    for line, values in table.rows:
        v = {k: values.get(k, "").strip() for k in COLUMNS}
        where = f"{path}: line {line}"
        bad = []
        if not v["date"]:
            bad.append("date is blank (YYYY-MM-DD the request came in)")
        elif (p := _date_problem(v["date"], today)) is not None:
            bad.append(p)
        if not v["reason"]:
            bad.append("reason is blank (say why: whose request, how it came)")
        filled = [k for k in ("artist", "tag", "url", "image_id") if v[k]]
        if v["source"] or v["post_id"]:
            filled.append("post")
            if not v["source"]:
                bad.append(f"post_id {v['post_id']!r} without a source (one of {', '.join(SOURCES)})")
            elif v["source"] not in SOURCES:
                bad.append(f"source {v['source']!r} is not a source (one of {', '.join(SOURCES)})")
            elif not v["post_id"]:
                bad.append(f"source {v['source']!r} without a post_id")
        if not filled:
            bad.append("nothing to match: fill one of artist, tag, url, image_id, or source with post_id")
        elif len(filled) > 1:
            shown = ", ".join(f"{k} {v['source'] + ' ' + v['post_id'] if k == 'post' else v[k]!r}" for k in filled)
            bad.append(f"{len(filled)} requests in one row ({shown}): one per row")
        else:
            kind = filled[0]
            value = f"{v['source']} {v['post_id']}" if kind == "post" else v[kind]
            if kind == "image_id":
                value = value.lower()
            if (p := _problem(kind, value)) is not None:
                bad.append(p)
        if bad:
            problems += [f"{where}: {b}" for b in bad]
            continue
        rows.append(Request(str(path), line, v["date"], v["reason"], kind, value, v["note"]))
    if problems:
        problems.sort(key=lambda p: int(m.group(1)) if (m := re.search(r": line (\d+): ", p)) else 0)
        raise OptoutError("\n".join([f"{path}: {len(problems)} problem{'s' * (len(problems) > 1)}, nothing changed "
                                     "(fix each line below, then run again):", *problems]))
    return Requests(path, rows)
