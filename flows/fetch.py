"""`python -m flows.fetch [--params FILE]`: `dvc repro fetch` as a Prefect flow (the deployment `fetch/default`);
the stage itself is `python -m tasks.fetch`, which dvc.yaml runs."""

import sys

from flows._stage import flow_main, stage_flow

fetch_flow = stage_flow("fetch")

if __name__ == "__main__":
    sys.exit(flow_main(fetch_flow, description=__doc__))
