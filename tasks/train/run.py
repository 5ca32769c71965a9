"""The train stage: write the training dataset (the reviewed, tagged faces), the resolved
run.json, then train (models.training_loop: one run directory per identity, resumed or new)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from models.training_loop import SUMMARY, TrainingError, train
from tasks.artifacts.reviewed import read_reviewed
from tasks.errors import MoeflowError
from tasks.fileio import atomic_write_json
from tasks.params.train import RunConfig
from tasks.reports import write_run_report
from tasks.train.export import ExportSummary, export_training_data
from tasks.typed import to_dict

log = logging.getLogger(__name__)


class TrainError(MoeflowError):
    """Training cannot go on: repeated non-finite losses, a bad checkpoint, no device."""


@dataclass
class TrainSummary:
    export: ExportSummary
    result: dict

    def lines(self) -> list[str]:
        r, e = self.result, self.export
        return [f"{e.faces} faces ({e.holdout} held out), data fingerprint {e.fingerprint[:12]}, tags by "
                f"{e.tagger or 'an unrecorded backend'}" + (f" ({e.tagger_reason})" if e.tagger_reason else ""),
                f"run {r['run']}: step {r['step']}, {r['steps_trained']} trained now"
                + (f" ({r['images_per_s']} images/s on {r['threads']} threads)" if r["steps_trained"] else ""),
                "last losses: " + ", ".join(f"{k} {r[k]:.3g}" for k in ("loss_d", "loss_g", "gp", "d_real", "d_fake")
                                            if isinstance(r.get(k), float))]

    def markdown(self) -> str:
        r, e = self.result, self.export
        lines = ["# train", "", f"- faces: **{e.faces}** ({e.holdout} held out; reviewed {e.reviewed}, "
                 f"untagged {e.untagged}), data fingerprint `{e.fingerprint[:12]}`",
                 f"- tags by `{e.tagger or '?'}`" + (f": {e.tagger_reason}" if e.tagger_reason else ""),
                 f"- run `{r['run']}`: step **{r['step']}** (this session trained {r['steps_trained']}"
                 + (f", resumed from {r['resumed_from']}" if r["resumed_from"] is not None else "") + ")",
                 f"- {r['device']} x{r['world']}, {r['threads']} threads, "
                 + (f"{r['images_per_s']} images/s" if r["images_per_s"] else "no step to run") + f", wall {r['wall_s']} s",
                 f"- NaN recoveries: {r['nan_recoveries']}, lr {r['lr']:.3g}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in r.items() if k.startswith(("loss", "adv", "cls", "gp", "acc", "d_"))
                  and isinstance(v, float)]
        return "\n".join(lines) + "\n"


def prepare(cfg: RunConfig, faces: str, crops: str, tags: str) -> ExportSummary:
    """The training dataset from the reviewed faces (`faces`, their crops in `crops`) and the tags."""
    return export_training_data(read_reviewed(faces, ["face_id", "shard"]), crops, tags, cfg.out.data, cfg.holdout)


def write_run_config(run: RunConfig) -> Path:
    """run.json: the resolved option list (the preset applied), what a standalone run reads."""
    path = Path(run.out.dir) / "run.json"
    atomic_write_json(path, to_dict(run))
    return path


def run_train(cfg: RunConfig, faces: str, crops: str, tags: str) -> TrainSummary:
    export = prepare(cfg, faces, crops, tags)
    run = cfg.resolved()
    path = write_run_config(run)
    log.info("train: run config %s (standalone: python -m models.training_loop --config %s)", path, path)
    try:
        result = train(run)
    except (TrainingError, ValueError) as e:
        raise TrainError(str(e)) from None
    write_run_report("train", {k: result[k] for k in ("run", "step", "steps_trained", "wall_s", "images_per_s",
                                                      "threads", "device", "world")})
    log.info("train: run %s at step %d (%d trained this session, %s images/s); summary in %s", result["run"],
             result["step"], result["steps_trained"], result["images_per_s"], Path(cfg.out.dir) / SUMMARY)
    return TrainSummary(export, result)
