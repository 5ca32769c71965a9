"""`python -m flows.detect [--params FILE]`: `dvc repro detect` as a Prefect flow (the deployment `detect/default`);
the stage itself is `python -m tasks.detect`, which dvc.yaml runs."""

import sys

from flows._stage import flow_main, stage_flow

detect_flow = stage_flow("detect")

if __name__ == "__main__":
    sys.exit(flow_main(detect_flow, description=__doc__))
