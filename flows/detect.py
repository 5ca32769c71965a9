"""`python -m flows.detect`: detect and crop anime faces from data/raw (see tasks/detect)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from flows._stage import publish_markdown, run_stage, stage_flow
from tasks.config import load_params
from tasks.detect.run import detect

log = logging.getLogger(__name__)


@stage_flow("detect")
def detect_flow(params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    cfg = params.detect
    log.info("detect: %s on %s -> %s", cfg.detector, params.scrape.out.manifest, cfg.out.faces)
    summary = detect(cfg, params.scrape.out.manifest, params.scrape.out.images)
    for line in summary.lines():
        log.info("detect: %s", line)
    publish_markdown("detect-summary", summary.markdown(Path(cfg.out.contact_sheet).read_bytes()),
                     "detect: images, faces, drops by reason, and a contact sheet of sample crops")
    return summary.as_dict()


if __name__ == "__main__":
    sys.exit(run_stage(detect_flow, description=__doc__))
