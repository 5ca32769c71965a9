"""The `render` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tasks.errors import ConfigError
from tasks.typed import device_name, positive


@dataclass(frozen=True)
class RenderOut:
    samples: str = "data/render/samples"  # grid.png, hair_colors.png, fixed_tags.png, interpolation.png, attributes/
    summary: str = "data/render/summary.json"  # detectability, diversity, memorisation, attributes, Frechet: each in full
    metrics: str = "data/render/metrics.json"  # one number per metric (DVC metrics)
    attributes: str = "data/render/attributes.json"  # per-attribute agreement and why an attribute is not scored


@dataclass(frozen=True)
class RenderConfig:
    generator: str = "data/train/generator.safetensors"  # the EMA generator (the train stage's)
    seed: int = 0  # noise and tags of every sheet
    grid: int = 8  # the random grid is grid x grid
    variations: int = 8  # columns of the hair-colour, fixed-tags and attribute sheets
    fixed_tag_rows: int = 4  # rows (tag vectors) of the fixed-tags sheet
    interpolation_pairs: int = 4  # rows of the interpolation sheet
    interpolation_steps: int = 8  # images per row, ends included
    eval_samples: int = 1000  # generated (and real) images for the metrics
    batch: int = 64
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    tagger: Literal["auto", "none"] = "auto"  # auto: the tag stage's backend when usable; none: skip tagger metrics
    out: RenderOut = field(default_factory=RenderOut)

    def validate(self, key: str) -> None:
        for name in ("grid", "variations", "fixed_tag_rows", "interpolation_pairs", "batch"):
            positive(getattr(self, name), f"{key}.{name}")
        positive(self.eval_samples, f"{key}.eval_samples", allow_zero=True)
        if self.interpolation_steps < 2:
            raise ConfigError(f"{key}.interpolation_steps: must be >= 2, got {self.interpolation_steps}")
        device_name(self.device, f"{key}.device")
