"""`python -m flows.review`: export the manual-review queue (see tasks/review).
`python -m flows.review merge [--from FILE] [--reviewer NAME] [--drop-missing]`: record the
verdicts typed into the queue in review/false_positives.csv (a reviewer's command: no Prefect, no DVC)."""

from __future__ import annotations

import argparse
import logging
import sys

from tasks.config import DEFAULT_PARAMS, load_params
from tasks.errors import MoeflowError

log = logging.getLogger(__name__)


def merge_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.review merge",
                                     description="Append the filled-in verdicts of the review queue to the decisions CSV.")
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="params file (default: params.yaml)")
    parser.add_argument("--from", dest="source", default=None,
                        help="CSV with face_id,false_positive[,reviewer,note] (default: review.out.queue)")
    parser.add_argument("--reviewer", default="", help="name recorded for rows that leave reviewer blank")
    parser.add_argument("--drop-missing", action="store_true",
                        help="skip verdicts on faces no longer in the faces dataset (a queue older than detect)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from tasks.review.run import inputs_from, merge

    try:
        params = load_params(args.params)
        result = merge(params.review, inputs_from(params), args.source, args.reviewer, args.drop_missing)
    except MoeflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(result.message())
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["merge"]:  # before the flow below imports Prefect (seconds)
    sys.exit(merge_main(sys.argv[2:]))

from flows._stage import publish_markdown, run_stage, stage_flow  # noqa: E402 - after the Prefect-free merge path


@stage_flow("review")
def review_flow(params_path: str = "params.yaml") -> dict:
    from tasks.review.run import inputs_from, run_review

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
        return merge_main(argv[1:])
    return run_stage(review_flow, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
