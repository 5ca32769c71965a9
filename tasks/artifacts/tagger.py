"""The tagger spec (`tag.out.tagger`, JSON): which backend tagged the faces, why, and every tag
param that decides the values (thresholds, the colour tagger's palettes, the model files), written
by the tag stage, so that render reads its generated images back with the very tagger the training
labels came from, without reading the tag stage's params. Speed knobs (batch size, device, workers,
threads, runner) are not recorded: the reader runs with their defaults and its own device."""

from __future__ import annotations

import os

from tasks.fileio import atomic_write_json, read_spec
from tasks.params.tag import TagConfig
from tasks.typed import build, to_dict

SPEC_FORMAT = 1
NOT_RECORDED = ("batch_size", "device", "workers", "threads", "runner", "dask_address", "out")


def write_tagger_spec(path: str | os.PathLike, cfg: TagConfig, backend: str, reason: str) -> None:
    settings = {k: v for k, v in to_dict(cfg).items() if k not in NOT_RECORDED}
    atomic_write_json(path, {"format": SPEC_FORMAT, "backend": backend, "reason": reason,
                             "settings": {**settings, "backend": backend}})


def read_tagger_spec(path: str | os.PathLike) -> tuple[TagConfig, str]:
    """(the tag settings with the backend that ran, why it ran)."""
    spec = read_spec(path, "tagger spec", "tag", SPEC_FORMAT)
    return build(TagConfig, spec.get("settings") or {}, "tagger spec"), str(spec.get("reason") or "")
