"""The `detect` section of params.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from tasks.artifacts.faces import MAX_BOX_SCALE
from tasks.errors import ConfigError
from tasks.typed import positive

MAX_DEDUP_HAMMING = 12  # the multi-index hash search stays fast up to here (64-bit pHash)


@dataclass(frozen=True)
class DetectOut:
    crops: str = "data/faces/crops"  # Parquet shards of PNG crops + the incremental state (persistent)
    faces: str = "data/faces/faces.parquet"  # one row per detected face (tasks.artifacts.faces)
    images: str = "data/faces/images.parquet"  # one row per input image: ok, or why it was unusable
    detector: str = "data/faces/detector.json"  # the detection settings, for render and release (tasks.artifacts.detector)
    contact_sheet: str = "data/faces/contact_sheet.png"
    summary: str = "data/faces/summary.json"  # counts, by reason
    metrics: str = "data/faces/metrics.json"  # the headline counts (DVC metric)


@dataclass(frozen=True)
class DetectConfig:
    detector: Literal["lbpcascade", "animeface"] = "lbpcascade"
    cascade: str = "models/lbpcascade_animeface.xml"  # lbpcascade: any local copy of nagadomi's file
    scale_factor: float = 1.1  # lbpcascade: detectMultiScale scaleFactor
    min_neighbors: int = 5  # lbpcascade: detectMultiScale minNeighbors
    min_size: int = 24  # lbpcascade: detectMultiScale minSize (square, px)
    min_likelihood: float = 0.0  # animeface: faces below are dropped ("low_likelihood")
    box_scale: float = 1.5  # the detected box is enlarged by this about its centre
    border: Literal["shift", "pad", "drop"] = "shift"  # an enlarged box that leaves the image
    pad_fill: Literal["white", "edge"] = "white"  # what `pad` (and an oversized `shift`) fills with
    min_face: int = 80  # detected boxes with a shorter side are dropped ("too_small")
    size: int = 128  # side of the stored square crop
    max_pixels: int = 40_000_000  # larger images are recorded as "too_large", not decoded
    monochrome_chroma: float = 8.0  # crops whose mean chroma (max-min of RGB, 0-255) is below are monochrome
    drop_monochrome: bool = False  # drop monochrome / line-art crops ("monochrome"), else only flag them
    dedup_hamming: Optional[int] = 4  # pHash distance for near-duplicates ("duplicate"); null = off
    workers: Optional[int] = None  # processes; null = all cores
    runner: Literal["processes", "dask"] = "processes"
    dask_address: Optional[str] = None  # runner dask: scheduler address; null = a local cluster of `workers`
    shard_rows: int = 8192  # crops per Parquet shard (readers read its row groups: tasks.artifacts.faces)
    contact_sheet_faces: int = 64  # sample crops on the contact sheet
    out: DetectOut = field(default_factory=DetectOut)

    def validate(self, key: str) -> None:
        if self.scale_factor <= 1.0:
            raise ConfigError(f"{key}.scale_factor: must be > 1, got {self.scale_factor!r}")
        positive(self.min_neighbors, f"{key}.min_neighbors", allow_zero=True)
        positive(self.min_size, f"{key}.min_size")
        if not 0.0 <= self.min_likelihood <= 1.0:
            raise ConfigError(f"{key}.min_likelihood: must be between 0 and 1, got {self.min_likelihood!r}")
        if not 1.0 <= self.box_scale <= MAX_BOX_SCALE:
            raise ConfigError(f"{key}.box_scale: must be between 1 and {MAX_BOX_SCALE:g}, got {self.box_scale!r}")
        positive(self.min_face, f"{key}.min_face", allow_zero=True)
        if self.size < 8:
            raise ConfigError(f"{key}.size: must be >= 8, got {self.size!r}")
        positive(self.max_pixels, f"{key}.max_pixels")
        positive(self.monochrome_chroma, f"{key}.monochrome_chroma", allow_zero=True)
        if self.dedup_hamming is not None and not 0 <= self.dedup_hamming <= MAX_DEDUP_HAMMING:
            raise ConfigError(f"{key}.dedup_hamming: must be 0..{MAX_DEDUP_HAMMING} or null, got {self.dedup_hamming!r}")
        if self.workers is not None:
            positive(self.workers, f"{key}.workers")
        positive(self.shard_rows, f"{key}.shard_rows")
        positive(self.contact_sheet_faces, f"{key}.contact_sheet_faces", allow_zero=True)
        if self.runner == "dask" and self.dask_address is not None and "://" not in self.dask_address:
            raise ConfigError(f"{key}.dask_address: expected e.g. tcp://host:8786, got {self.dask_address!r}")
