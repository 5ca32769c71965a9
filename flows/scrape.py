"""`python -m flows.scrape`: collect images into data/raw (see tasks/scrape)."""

from __future__ import annotations

import logging
import sys

from flows._stage import publish_markdown, run_stage, stage_flow
from tasks.config import load_params
from tasks.scrape.run import scrape

log = logging.getLogger(__name__)


@stage_flow("scrape")
def scrape_flow(params_path: str = "params.yaml") -> dict:
    cfg = load_params(params_path).scrape
    log.info("scrape: source %s -> %s", cfg.source, cfg.out.images)
    summary = scrape(cfg)
    for line in summary.lines():
        log.info("scrape: %s", line)
    publish_markdown("scrape-summary", summary.markdown(), "scrape: kept, duplicates, rejected and skipped by reason")
    return {"kept_new": summary.kept_new, "kept_total": summary.kept_total, "duplicate": summary.duplicate,
            "rejected": dict(summary.rejected), "skipped": dict(summary.skipped), "failed": summary.failed}


if __name__ == "__main__":
    sys.exit(run_stage(scrape_flow, description=__doc__))
