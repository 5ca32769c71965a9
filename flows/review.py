"""`python -m flows.review [--params FILE]`: `dvc repro review` as a Prefect flow (the deployment
`review/default`); the stage itself is `python -m tasks.review`, which dvc.yaml runs.
`python -m flows.review merge ...` is the reviewer's `python -m tasks.review merge ...`."""

import sys

from flows._stage import flow_main, stage_flow

review_flow = stage_flow("review")

if __name__ == "__main__":
    if sys.argv[1:2] == ["merge"]:
        from tasks.review.__main__ import merge_main

        sys.exit(merge_main(sys.argv[2:]))
    sys.exit(flow_main(review_flow, description=__doc__))
