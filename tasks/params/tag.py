"""The `tag` section of params.yaml."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from tasks.artifacts.tags import EYE_COLORS, HAIR_COLORS, MGM_TAGS
from tasks.errors import ConfigError
from tasks.typed import positive

# Illustration2Vec general-tag names (spaces) for the MGM columns.
I2V_TAG_NAMES = {t: t.replace("_", " ") for t in MGM_TAGS} | {"twintails": "twintails", "ponytail": "ponytail"}
# wd-tagger (Danbooru) names: the MGM column names are already Danbooru tags.
WD_TAG_NAMES = {t: t for t in MGM_TAGS}

# A Dask scheduler address: tcp://host:port (tls://host:port for a TLS cluster; IPv6 hosts in brackets).
DASK_ADDRESS = re.compile(r"^(tcp|tls)://([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$")

# Named colours in sRGB; a name may have several prototypes (shades as anime art draws them).
HAIR_PALETTE = {
    "blonde": ((250, 225, 140), (235, 200, 100)), "brown": ((75, 50, 40), (130, 80, 50), (200, 135, 75), (175, 90, 45)),
    "black": ((25, 25, 30), (50, 50, 60)), "blue": ((60, 100, 200), (40, 60, 130)), "pink": ((250, 160, 190), (230, 110, 150)),
    "purple": ((140, 90, 180), (90, 60, 120)), "green": ((80, 170, 90), (40, 110, 60)), "red": ((210, 50, 50), (150, 30, 40)),
    "silver": ((190, 190, 205),), "white": ((245, 245, 245),), "orange": ((250, 140, 30),),
    "aqua": ((80, 200, 200), (40, 140, 150)), "grey": ((128, 128, 128), (90, 90, 95)),
}
EYE_PALETTE = {
    "blue": ((50, 100, 220), (30, 60, 150)), "red": ((200, 40, 40), (140, 20, 30)), "brown": ((130, 80, 40), (90, 55, 35)),
    "green": ((60, 160, 80), (30, 100, 50)), "purple": ((140, 70, 180), (90, 50, 130)), "yellow": ((230, 200, 50),),
    "pink": ((240, 130, 170),), "aqua": ((60, 200, 200), (30, 140, 150)), "black": ((30, 30, 30),), "orange": ((240, 130, 30),),
}

Palette = dict[str, tuple[tuple[int, ...], ...]]


def _check_palette(palette, names: tuple[str, ...], key: str) -> None:
    unknown = sorted(set(palette) - set(names))
    if unknown:
        raise ConfigError(f"{key}: unknown colour {unknown[0]!r} (known: {', '.join(names)})")
    for name, protos in palette.items():
        if not protos:
            raise ConfigError(f"{key}.{name}: expected at least one [r, g, b] prototype")
        for p in protos:
            if len(p) != 3 or not all(0 <= v <= 255 for v in p):
                raise ConfigError(f"{key}.{name}: expected [r, g, b] values 0-255, got {list(p)}")


def _check_names(mapping, key: str) -> None:
    unknown = sorted(set(mapping) - set(MGM_TAGS))
    if unknown:
        raise ConfigError(f"{key}: unknown MGM tag {unknown[0]!r} (known: {', '.join(MGM_TAGS)})")


@dataclass(frozen=True)
class I2VConfig:
    weights: str = "models/i2v/illust2vec_tag.safetensors"  # converted by python -m tasks.tools.convert tag
    tag_list: str = "models/i2v/tag_list.json"
    feature_weights: str = "models/i2v/illust2vec.safetensors"  # converted by python -m tasks.tools.convert feature
    tags: dict[str, str] = field(default_factory=lambda: dict(I2V_TAG_NAMES))  # MGM column -> i2v tag name

    def validate(self, key: str) -> None:
        _check_names(self.tags, f"{key}.tags")


@dataclass(frozen=True)
class OnnxConfig:
    model: str = "models/wd-tagger/model.onnx"
    tags_csv: str = "models/wd-tagger/selected_tags.csv"  # tag_id,name,category,count; one row per output
    tags: dict[str, str] = field(default_factory=lambda: dict(WD_TAG_NAMES))  # MGM column -> tagger tag name
    bgr: bool = True  # wd-taggers take BGR 0-255; false for RGB models
    pad_color: int = 255  # the crop is padded to a square of this grey before resizing

    def validate(self, key: str) -> None:
        _check_names(self.tags, f"{key}.tags")
        if not 0 <= self.pad_color <= 255:
            raise ConfigError(f"{key}.pad_color: expected 0..255, got {self.pad_color}")


@dataclass(frozen=True)
class ColorConfig:
    hair_palette: Palette = field(default_factory=lambda: dict(HAIR_PALETTE))
    eye_palette: Palette = field(default_factory=lambda: dict(EYE_PALETTE))
    temperature: float = 8.0  # ΔE (CIELAB) scale of the softmax that turns distances into probabilities
    lightness_weight: float = 1.5  # kL: ΔE lightness differences count 1/kL (CIE94 / CMC textiles use 2)
    measure: bool = True  # faces without detector colours (lbpcascade): run animeface on the crop to measure them
    refine_delta_e: float = 40.0  # measured hair sample -> median of nearby pixels within this ΔE; 0 = raw sample

    def validate(self, key: str) -> None:
        _check_palette(self.hair_palette, HAIR_COLORS, f"{key}.hair_palette")
        _check_palette(self.eye_palette, EYE_COLORS, f"{key}.eye_palette")
        positive(self.temperature, f"{key}.temperature")
        positive(self.lightness_weight, f"{key}.lightness_weight")
        positive(self.refine_delta_e, f"{key}.refine_delta_e", allow_zero=True)


@dataclass(frozen=True)
class TagOut:
    tags: str = "data/tags/tags.parquet"
    tagger: str = "data/tags/tagger.json"  # the backend that ran, why, and its value params (tasks.artifacts.tagger)
    summary: str = "data/tags/summary.json"  # backend and why, frequencies and coverage per tag (no timings)
    metrics: str = "data/tags/metrics.json"  # faces tagged, mean coverage (DVC metric)


@dataclass(frozen=True)
class TagConfig:
    backend: Literal["auto", "i2v", "onnx", "color"] = "auto"
    threshold: float = 0.25  # binary tags (styles, blush, smile, ...) are 1 at or above this probability
    thresholds: dict[str, float] = field(default_factory=dict)  # per-tag overrides, MGM column -> threshold
    batch_size: int = 32
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = True  # bf16 autocast on GPU (CPU always runs float32)
    channels_last: bool = True
    workers: int | None = None  # decoding / colour-measuring processes; null = see tasks.taggers.loader.default_workers
    threads: int | None = None  # torch / onnxruntime CPU threads; null = all this process's cores
    raw_top_k: int = 0  # > 0: also store the tagger's top-k raw tags (column raw_top)
    feature: bool = False  # also store the 4,096-d Illustration2Vec feature (i2v backend; needs i2v.feature_weights)
    runner: Literal["local", "dask"] = "local"  # dask: chunks of faces (by crop shard) on a Dask cluster, same numbers
    dask_address: str | None = None  # runner dask: tcp://host:port of the scheduler; null = a LocalCluster of `workers` (or cores)
    i2v: I2VConfig = field(default_factory=I2VConfig)
    onnx: OnnxConfig = field(default_factory=OnnxConfig)
    color: ColorConfig = field(default_factory=ColorConfig)
    out: TagOut = field(default_factory=TagOut)

    def validate(self, key: str) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"{key}.threshold: expected a probability in (0, 1), got {self.threshold}")
        _check_names(self.thresholds, f"{key}.thresholds")
        for name, v in self.thresholds.items():
            if not 0.0 < v < 1.0:
                raise ConfigError(f"{key}.thresholds.{name}: expected a probability in (0, 1), got {v}")
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError(f"{key}.batch_size: expected 1..4096, got {self.batch_size}")
        for name in ("workers", "threads"):
            v = getattr(self, name)
            if v is not None and v < (0 if name == "workers" else 1):
                raise ConfigError(f"{key}.{name}: expected {'>= 0' if name == 'workers' else '>= 1'} or null, got {v}")
        if not 0 <= self.raw_top_k <= 1000:
            raise ConfigError(f"{key}.raw_top_k: expected 0..1000, got {self.raw_top_k}")
        if self.dask_address is not None:
            m = DASK_ADDRESS.match(self.dask_address)
            if m is None or not 1 <= int(m.group(3)) <= 65535:
                raise ConfigError(f"{key}.dask_address: expected tcp://host:port (e.g. tcp://scheduler:8786) or null, "
                                  f"got {self.dask_address!r}")

    def threshold_of(self, tag: str) -> float:
        return self.thresholds.get(tag, self.threshold)
