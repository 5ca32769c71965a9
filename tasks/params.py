"""The root of params.yaml: one typed section per stage, and `load_params` that reads the file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks.config import build, read_yaml
from tasks.detect.config import DetectConfig
from tasks.errors import ConfigError
from tasks.fetch.config import FetchConfig
from tasks.release.config import ReleaseConfig
from tasks.render.config import RenderConfig
from tasks.review.config import ReviewConfig
from tasks.scrape.config import ScrapeConfig
from tasks.tag.config import TagConfig
from tasks.train.config import TrainConfig
from tasks.web.config import ExportConfig

DEFAULT_PARAMS = "params.yaml"


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


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read params.yaml into the frozen, typed `Params`; a mistake is a ConfigError naming the
    file and the dotted key."""
    data = read_yaml(path)
    try:
        return build(Params, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
