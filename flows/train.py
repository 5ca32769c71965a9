"""`python -m flows.train [--params FILE]`: `dvc repro train` as a Prefect flow (the deployment `train/default`);
the stage itself is `python -m tasks.train`, which dvc.yaml runs."""

import sys

from flows._stage import flow_main, stage_flow

train_flow = stage_flow("train")

if __name__ == "__main__":
    sys.exit(flow_main(train_flow, description=__doc__))
