"""The `release` section of params.yaml: the dataset published as URLs and labels, not pixels."""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.errors import ConfigError


@dataclass(frozen=True)
class ReleaseOut:
    faces: str = "data/release/faces.parquet"  # one row per kept, reviewed face (tasks.artifacts.release)
    jsonl: str = "data/release/faces.jsonl"  # the same rows, one JSON object a line
    header: str = "data/release/release.json"  # schema version, license, notes, columns, crop, tagger, files
    card: str = "data/release/README.md"  # the dataset card: the license/notes header, counts, how to rebuild


@dataclass(frozen=True)
class ReleaseConfig:
    title: str = "moeflow anime faces"
    license: str = "CC0-1.0"  # of what is published (URLs, boxes, labels); the images are not included
    notes: str = ("No image is included: each face names its image by URL and by the sha256 of its bytes. "
                  "The images remain their rightsholders'; fetch them under each site's terms.")
    out: ReleaseOut = field(default_factory=ReleaseOut)

    def validate(self, key: str) -> None:
        for name in ("title", "license"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{key}.{name}: must not be empty")
        if not self.out.faces.endswith(".parquet"):
            raise ConfigError(f"{key}.out.faces: expected a .parquet path, got {self.out.faces!r}")
        if not self.out.jsonl.endswith(".jsonl"):
            raise ConfigError(f"{key}.out.jsonl: expected a .jsonl path, got {self.out.jsonl!r}")
