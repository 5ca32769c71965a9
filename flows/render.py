"""`python -m flows.render`: sample sheets from the EMA generator, attribute accuracy and the
Frechet distance (see tasks/render)."""

from __future__ import annotations

import logging
import sys

from flows._stage import publish_markdown, run_stage, stage_flow
from tasks.config import load_params
from tasks.render.run import run_render

log = logging.getLogger(__name__)


@stage_flow("render")
def render_flow(params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    summary = run_render(params)
    for line in summary.markdown().splitlines()[-2:]:
        log.info("render: %s", line.lstrip("- "))
    publish_markdown("render-samples", summary.markdown(), "render: sample sheets and generator metrics")
    return summary.metrics


if __name__ == "__main__":
    sys.exit(run_stage(render_flow, description=__doc__))
