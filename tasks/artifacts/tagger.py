"""The tagger spec (`tag.out.tagger`, JSON): which backend tagged the faces, why, and every tag
param that decides the values (thresholds, the colour tagger's palettes, the model files), written
by the tag stage, so that render reads its generated images back with the very tagger the training
labels came from, without reading the tag stage's params. Speed knobs (batch size, device, workers,
threads, runner) are not recorded: the reader runs with their defaults and its own device."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tasks.errors import DataError
from tasks.fileio import atomic_write_json
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
    p = Path(path)
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p} does not exist (run the tag stage first: dvc repro tag)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{p} is not a readable tagger spec: {e}") from None
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise DataError(f"{p}: not a tagger spec of format {SPEC_FORMAT} (rerun the tag stage)")
    return build(TagConfig, spec.get("settings") or {}, "tagger spec"), str(spec.get("reason") or "")
