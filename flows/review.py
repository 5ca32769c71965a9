"""`python -m flows.review [--params FILE]`: `dvc repro review` as a Prefect flow (the deployment
`review/default`); the stage itself is `python -m tasks.review`, which dvc.yaml runs.
`python -m flows.review merge ...` is the reviewer's `python -m tasks.review merge ...`
(tasks.review.cli), reached through this module (it then imports Prefect; the tasks command does not)."""

import sys

from flows._stage import flow_main, stage_flow
from tasks.review.cli import merge_main

review_flow = stage_flow("review")

if __name__ == "__main__":
    if sys.argv[1:2] == ["merge"]:
        sys.exit(merge_main(sys.argv[2:], prog="python -m flows.review"))
    sys.exit(flow_main(review_flow, description=__doc__))
