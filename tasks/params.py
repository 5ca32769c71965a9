"""The root of params.yaml: one typed section per stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.scrape.config import ScrapeConfig


@dataclass(frozen=True)
class Params:
    scrape: ScrapeConfig = field(default_factory=ScrapeConfig)
