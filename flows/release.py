"""`python -m flows.release [--params FILE]`: `dvc repro release` as a Prefect flow (the deployment
`release/default`); the stage itself is `python -m tasks.release`, which dvc.yaml runs."""

import sys

from flows._stage import flow_main, stage_flow

release_flow = stage_flow("release")

if __name__ == "__main__":
    sys.exit(flow_main(release_flow, description=__doc__))
