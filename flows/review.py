"""`python -m flows.review`: export the manual-review queue (see tasks/review).
`python -m flows.review merge ...` is the reviewer's merge, `python -m tasks.review merge ...`
(tasks.review.cli), reached through the flow's module (it then imports Prefect, which the
tasks.review command does not)."""

from __future__ import annotations

import logging
import sys

from flows._stage import publish_markdown, run_stage, stage_flow
from tasks.config import load_params
from tasks.review.cli import merge_main
from tasks.review.run import inputs_from, run_review

log = logging.getLogger(__name__)


@stage_flow("review")
def review_flow(params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    cfg = params.review
    log.info("review: faces %s, decisions %s -> %s", params.detect.out.faces, cfg.decisions, cfg.out.queue)
    stats = run_review(cfg, inputs_from(params))
    for line in stats.lines():
        log.info("review: %s", line)
    publish_markdown("review-summary", stats.markdown(), "review: reviewed / pending / false-positive rate per detector")
    return stats.as_dict()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:], prog="python -m flows.review")
    return run_stage(review_flow, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
