"""`python -m flows.export [--params FILE]`: `dvc repro export` as a Prefect flow (the deployment `export/default`);
the stage itself is `python -m tasks.export`, which dvc.yaml runs."""

import sys

from flows._stage import flow_main, stage_flow

export_flow = stage_flow("export")

if __name__ == "__main__":
    sys.exit(flow_main(export_flow, description=__doc__))
