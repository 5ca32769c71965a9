"""The train stage: export the reviewed, tagged faces, write the resolved run.json, train."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from models.config import to_dict
from models.training_loop import SUMMARY, TrainingError, train
from tasks.errors import MoeflowError
from tasks.fileio import atomic_write_json
from tasks.train.config import TrainConfig
from tasks.train.export import ExportSummary, export_training_data

log = logging.getLogger(__name__)


class TrainError(MoeflowError):
    """Training cannot go on: checkpoint/params mismatch, repeated non-finite losses."""


@dataclass
class TrainSummary:
    export: ExportSummary
    result: dict

    def markdown(self) -> str:
        r = self.result
        lines = ["# train", "", f"- faces: **{self.export.faces}** (reviewed {self.export.reviewed}, "
                 f"untagged {self.export.untagged})",
                 f"- steps: **{r['step']}** (resumed from {r['resumed_from']}), device {r['device']} x{r['world']}, "
                 f"bf16 {r['amp_bf16']}", f"- images/s: {r['images_per_s']}, wall {r['wall_s']} s",
                 f"- NaN recoveries: {r['nan_recoveries']}, lr {r['lr']:.3g}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in r.items() if k.startswith(("loss", "adv", "cls", "gp", "acc", "d_"))
                  and isinstance(v, float)]
        return "\n".join(lines) + "\n"


def prepare(params) -> ExportSummary:
    """The training export from the reviewed faces and the tags file."""
    from tasks.review.run import reviewed_faces  # validates review/false_positives.csv

    cfg: TrainConfig = params.train
    return export_training_data(reviewed_faces(params), params.detect.out.crops, tags_path(params), cfg.out.data)


def tags_path(params) -> str:
    """params.tag.out.tags (data/tags/tags.parquet before the tag section exists)."""
    tag = getattr(params, "tag", None)
    return getattr(getattr(tag, "out", None), "tags", None) or "data/tags/tags.parquet"


def write_run_config(cfg: TrainConfig) -> Path:
    path = Path(cfg.out.dir) / "run.json"
    atomic_write_json(path, to_dict(cfg.run_config()))
    return path


def run_train(params) -> TrainSummary:
    cfg: TrainConfig = params.train
    export = prepare(params)
    path = write_run_config(cfg)
    log.info("train: run config %s (standalone: python -m models.training_loop --config %s)", path, path)
    try:
        result = train(cfg.run_config())
    except (TrainingError, ValueError) as e:
        raise TrainError(str(e)) from None
    log.info("train: %s", json.dumps({k: result[k] for k in ("step", "images_per_s", "nan_recoveries")}))
    log.info("train: metrics in %s", Path(cfg.out.dir) / SUMMARY)
    return TrainSummary(export, result)
