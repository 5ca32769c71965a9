"""The detector spec (`detect.out.detector`, JSON): the detection settings that made the faces
dataset, written by detect, so that a later stage measures with the same detector without reading
detect's params: render counts faces in generated images with it (detectability), release records
the crop's padding. Only what decides the faces is recorded (no worker count, runner or path of an
output); the cascade is named by its path and pinned by its sha256."""

from __future__ import annotations

import os

from tasks.fileio import atomic_write_json, read_spec
from tasks.params.detect import DetectConfig
from tasks.typed import build, to_dict

SPEC_FORMAT = 1
KEYS = ("detector", "cascade", "scale_factor", "min_neighbors", "min_size", "min_likelihood", "box_scale", "border",
        "pad_fill", "min_face", "size", "max_pixels", "monochrome_chroma", "drop_monochrome", "dedup_hamming")


def write_detector_spec(path: str | os.PathLike, cfg: DetectConfig, cascade_sha256: str | None) -> None:
    settings = {k: v for k, v in to_dict(cfg).items() if k in KEYS}
    atomic_write_json(path, {"format": SPEC_FORMAT, "settings": settings, "cascade_sha256": cascade_sha256})


def read_detector_spec(path: str | os.PathLike) -> tuple[DetectConfig, str | None]:
    """(the detect settings, the cascade's sha256 when lbpcascade)."""
    spec = read_spec(path, "detector spec", "detect", SPEC_FORMAT)
    return build(DetectConfig, spec.get("settings") or {}, "detector spec"), spec.get("cascade_sha256")
