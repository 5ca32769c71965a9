"""The root of params.yaml: one typed section per stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.detect.config import DetectConfig
from tasks.fetch.config import FetchConfig
from tasks.web.config import ExportConfig
from tasks.release.config import ReleaseConfig
from tasks.render.config import RenderConfig
from tasks.review.config import ReviewConfig
from tasks.scrape.config import ScrapeConfig
from tasks.tag.config import TagConfig
from tasks.train.config import TrainConfig


@dataclass(frozen=True)
class Params:
    fetch: FetchConfig = field(default_factory=FetchConfig)
    scrape: ScrapeConfig = field(default_factory=ScrapeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
