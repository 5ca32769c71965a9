"""Helpers for the scrape tests: build a ScrapeConfig aimed at a FakeBooru and read results."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pyarrow.parquet as pq

from tasks.fileio import sha256_bytes, sha256_file
from tasks.params.scrape import ScrapeConfig
from tasks.typed import build
from tests.conftest import deep_update

FAST_HTTP = {"rate_limit": 0, "concurrency": 4, "retries": 3, "backoff": 0.01, "backoff_max": 0.05,
             "connect_timeout": 2.0, "read_timeout": 5.0, "contact": "tests@moeflow.local"}


OPTOUT_HEADER = "date,reason,artist,tag,url,source,post_id,image_id,note\n"


def scrape_cfg(tmp: Path, base_url: str, **over) -> ScrapeConfig:
    """A config writing under `tmp`, with an empty optout.csv of its own there (unless one exists)."""
    optout = tmp / "optout.csv"
    if not optout.exists():
        tmp.mkdir(parents=True, exist_ok=True)
        optout.write_text(OPTOUT_HEADER)
    data = {"source": "danbooru", "base_url": base_url, "tags": "1girl", "posts_per_page": 10,
            "http": dict(FAST_HTTP), "filters": {"min_width": 0, "min_height": 0}, "optout": str(optout),
            "out": {"images": str(tmp / "images"), "manifest": str(tmp / "manifest.parquet"),
                    "rejected": str(tmp / "rejected.parquet"), "boxes": str(tmp / "boxes.parquet"),
                    "optout_log": str(tmp / "optout_log.jsonl"), "summary": str(tmp / "summary.json"),
                    "metrics": str(tmp / "metrics.json")}}
    return build(ScrapeConfig, deep_update(data, over), "scrape")


def manifest(cfg: ScrapeConfig) -> list[dict]:
    return pq.read_table(cfg.out.manifest).to_pylist()


def rejected(cfg: ScrapeConfig) -> dict[str, str]:
    """post_id -> reason"""
    return {r["post_id"]: r["reason"] for r in pq.read_table(cfg.out.rejected).to_pylist()}


def stored(images: str | Path) -> list[str]:
    """The sha256 of every image the store holds: each member of each pack, each loose file."""
    images, out = Path(images), []
    for p in sorted(images.glob("packs/*")):
        with tarfile.open(p) as tar:
            out += [sha256_bytes(tar.extractfile(m).read()) for m in tar.getmembers()]
    return out + [sha256_file(p) for p in sorted(images.glob("*/*")) if len(p.parent.name) == 2]


def sha_of(paths) -> set[str]:
    return {sha256_file(p) for p in paths}
