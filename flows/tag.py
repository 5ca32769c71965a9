"""`python -m flows.tag [--params FILE]`: `dvc repro tag` as a Prefect flow (the deployment `tag/default`);
the stage itself is `python -m tasks.tag`, which dvc.yaml runs."""

import sys

from flows._stage import flow_main, stage_flow

tag_flow = stage_flow("tag")

if __name__ == "__main__":
    sys.exit(flow_main(tag_flow, description=__doc__))
