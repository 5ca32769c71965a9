"""`python -m flows.train`: export the reviewed, tagged faces and train the conditional DRAGAN
(see models/training_loop.py; resumes automatically from data/train/checkpoints)."""

from __future__ import annotations

import logging
import sys

from flows._stage import publish_markdown, run_stage, stage_flow
from tasks.config import load_params
from tasks.train.run import run_train

log = logging.getLogger(__name__)


@stage_flow("train")
def train_flow(params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    cfg = params.train
    log.info("train: %d steps of batch %d at %d px -> %s", cfg.loop.steps, cfg.optim.batch, cfg.model.image_size,
             cfg.out.dir)
    summary = run_train(params)
    publish_markdown("train-summary", summary.markdown(), "train: steps, throughput, losses, NaN recoveries")
    return summary.result


if __name__ == "__main__":
    sys.exit(run_stage(train_flow, description=__doc__))
