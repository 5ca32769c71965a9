"""The `review` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tasks.errors import ConfigError


@dataclass(frozen=True)
class ReviewOut:
    faces: str = "data/review/faces.parquet"  # the faces that pass review, for tag, train, release (tasks.artifacts.reviewed)
    queue: str = "review/queue.csv"  # faces waiting for a verdict, for a spreadsheet
    html: str = "review/queue.html"  # the contact sheet, opens from disk
    thumbs: str = "review/thumbs"  # <version>/part-NNNNN.js: pages_per_file sprite pages and their faces each
    stats: str = "review/stats.json"  # reviewed / pending / false-positive rate, per detector
    metrics: str = "review/metrics.json"  # the headline numbers (DVC metric)


@dataclass(frozen=True)
class ReviewConfig:
    decisions: str = "review/false_positives.csv"  # git-tracked, human-edited; a dependency, never an output
    unreviewed: Literal["keep", "drop"] = "keep"  # faces without a decision: passed downstream or not
    thumb_size: int = 96  # side of a thumbnail, pixels
    page_size: int = 500  # faces per contact-sheet page (one sprite image each)
    columns: int = 20  # thumbnails per row of a sprite image
    pages_per_file: int = 8  # sprite pages per part file (part-NNNNN.js): DVC tracks one file per part
    out: ReviewOut = field(default_factory=ReviewOut)

    def validate(self, key: str) -> None:
        if not 16 <= self.thumb_size <= 512:
            raise ConfigError(f"{key}.thumb_size: expected 16..512 pixels, got {self.thumb_size}")
        if not 1 <= self.page_size <= 5000:
            raise ConfigError(f"{key}.page_size: expected 1..5000 faces, got {self.page_size}")
        if not 1 <= self.pages_per_file <= 64:
            raise ConfigError(f"{key}.pages_per_file: expected 1..64 pages, got {self.pages_per_file}")
        if self.page_size * self.pages_per_file > 20000:
            raise ConfigError(f"{key}: page_size x pages_per_file = {self.page_size * self.pages_per_file} faces a part file, "
                              "over 20000 (the browser reads a part whole)")
        if not 1 <= self.columns <= 100:
            raise ConfigError(f"{key}.columns: expected 1..100, got {self.columns}")
        if self.columns * self.thumb_size > 16000:
            raise ConfigError(f"{key}: columns x thumb_size = {self.columns * self.thumb_size} px, over 16000 (a JPEG limit is 65535, browsers prefer less)")
        if not self.decisions.endswith(".csv"):
            raise ConfigError(f"{key}.decisions: expected a .csv path, got {self.decisions!r}")
