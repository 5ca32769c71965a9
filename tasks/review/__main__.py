"""`python -m tasks.review [--params FILE]`: export the manual-review queue (the DVC stage command).
`python -m tasks.review merge [--from FILE] [--reviewer NAME] [--drop-missing]`: record the
verdicts typed into the queue in review/false_positives.csv (a reviewer's command: no Prefect, no DVC)."""

import argparse
import logging
import sys

from tasks.config import DEFAULT_PARAMS, load_params
from tasks.errors import MoeflowError
from tasks.stage import main


def run(params):
    from tasks.review.run import inputs_from, run_review

    return run_review(params.review, inputs_from(params))


def merge_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.review merge",
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


if __name__ == "__main__":
    if sys.argv[1:2] == ["merge"]:
        sys.exit(merge_main(sys.argv[2:]))
    sys.exit(main("review", run, description=__doc__))
