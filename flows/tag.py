"""`python -m flows.tag`: the 34 Make.Girls.Moe tags for every reviewed face (see tasks/tag)."""

from __future__ import annotations

import logging
import sys

from flows._stage import publish_markdown, run_stage, stage_flow
from tasks.config import load_params
from tasks.tag.run import run_tag

log = logging.getLogger(__name__)


@stage_flow("tag")
def tag_flow(params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    log.info("tag: reviewed faces of %s -> %s", params.detect.out.faces, params.tag.out.tags)
    summary = run_tag(params)
    for line in summary.lines():
        log.info("tag: %s", line)
    publish_markdown("tag-summary", summary.markdown(), "tag: backend, tag frequencies next to Make.Girls.Moe's")
    return summary.to_json()


if __name__ == "__main__":
    sys.exit(run_stage(tag_flow, description=__doc__))
