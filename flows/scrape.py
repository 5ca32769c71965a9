"""`python -m flows.scrape [--params FILE]`: `dvc repro scrape` as a Prefect flow (the deployment `scrape/default`);
the stage itself is `python -m tasks.scrape`, which dvc.yaml runs."""

import sys

from flows._stage import flow_main, stage_flow

scrape_flow = stage_flow("scrape")

if __name__ == "__main__":
    sys.exit(flow_main(scrape_flow, description=__doc__))
