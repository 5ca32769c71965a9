"""The whole of params.yaml at once: every section, typed (`Params`). For the commands outside the
DAG (the dataset card, provenance, the paper-scale run) and the Prefect flows' up-front check; a
stage loads only its own section (tasks.params.load_section)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks.errors import ConfigError
from tasks.params import DEFAULT_PARAMS, SECTIONS, read_params, require_sections
from tasks.params.detect import DetectConfig
from tasks.params.export import ExportConfig
from tasks.params.fetch import FetchConfig
from tasks.params.release import ReleaseConfig
from tasks.params.render import RenderConfig
from tasks.params.review import ReviewConfig
from tasks.params.scrape import ScrapeConfig
from tasks.params.tag import TagConfig
from tasks.params.train import RunConfig
from tasks.typed import build


@dataclass(frozen=True)
class Params:
    fetch: FetchConfig = field(default_factory=FetchConfig)
    scrape: ScrapeConfig = field(default_factory=ScrapeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    train: RunConfig = field(default_factory=RunConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    export: ExportConfig = field(default_factory=ExportConfig)



def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read the params file into the frozen, typed `Params`; a mistake is a ConfigError naming the
    file and the dotted key. Every section must be there (tasks.params.require_sections)."""
    data = read_params(path)
    require_sections(data, SECTIONS, path)
    try:
        return build(Params, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
