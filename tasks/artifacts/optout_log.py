"""The audit log of takedowns (`scrape.out.optout_log`, JSON lines, git-tracked, only appended):
one line per image an opt-out removed: when, which row of optout.csv matched and how, the post it
came from, its faces, and which artifact versions still held it (tasks.scrape.audit). The release
card and the dataset card count from it (`removal_counts`, `card_section`)."""

from __future__ import annotations

import collections
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from tasks.artifacts.images import OPTOUT, read_rejected

log = logging.getLogger(__name__)

LOG_FORMAT = 1  # bump when a line's layout changes


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append_log(path: str | os.PathLike, entries: Iterable[dict]) -> None:
    """Append lines and make them durable before anything is removed."""
    lines = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in entries)
    if not lines:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def read_log(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                log.warning("%s line %d: not JSON, ignored", p, n)
    return out


def removal_counts(log_path: str | os.PathLike, rejected_path: str | os.PathLike | None = None,
                   requests=None) -> dict:
    """The card's "removed on request", over every run: the requests on file (by kind), the images
    and faces removed after they were kept (by kind of request), the model versions that had
    trained on them, and the posts left out before any download (`optout` in rejected.parquet)."""
    entries = [e for e in read_log(log_path) if e.get("action") == "removed"]
    left_out = 0
    if rejected_path is not None and Path(rejected_path).is_file():
        reasons = read_rejected(rejected_path, ["reason"]).column("reason").to_pylist()
        left_out = sum(r == OPTOUT for r in reasons)
    out: dict = {}
    if requests is not None:
        out["requests"] = len(requests)
        out["requests_by_kind"] = dict(sorted(collections.Counter(r.kind for r in requests.rows).items()))
    out["images_removed"] = len({e["image_id"] for e in entries})
    out["faces_removed"] = len({f for e in entries for f in e.get("faces", [])})
    out["removed_by"] = dict(sorted(collections.Counter(e["request"]["kind"] for e in entries).items()))
    out["model_versions_that_had_trained_on_them"] = len(
        {(c["path"], c["md5"]) for e in entries for c in e.get("contained_in", []) if c.get("trained_on")})
    out["posts_left_out"] = left_out
    return out


def card_section(optout_csv: str | os.PathLike, log_path: str | os.PathLike,
                 rejected_path: str | os.PathLike | None) -> str:
    """The dataset card's "Removed on request" (the project's card and the release's)."""
    from tasks.artifacts.optout import read_requests

    c = removal_counts(log_path, rejected_path, read_requests(optout_csv))
    by = ", ".join(f"{k} {v}" for k, v in c["removed_by"].items()) or "none"
    kinds = ", ".join(f"{k} {v}" for k, v in c.get("requests_by_kind", {}).items()) or "none"
    return (f"Requests in `{optout_csv}`: **{c.get('requests', 0)}** ({kinds}).\n\n"
            f"| removed after collection, over every run | n |\n|---|---:|\n"
            f"| images (their bytes left the image store) | {c['images_removed']} |\n"
            f"| faces (gone from faces, crops, review queue, tags, training data, release) | {c['faces_removed']} |\n"
            f"| model versions that had trained on them (retrained since) | "
            f"{c['model_versions_that_had_trained_on_them']} |\n"
            f"| posts left out before any download | {c['posts_left_out']} |\n\n"
            f"Removed by kind of request: {by}. Each removal, with the row that matched it and the artifact versions "
            f"that still held it, is a line of `{log_path}`.\n")
