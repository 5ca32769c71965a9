"""`python -m flows.render [--params FILE]`: `dvc repro render` as a Prefect flow (the deployment `render/default`);
the stage itself is `python -m tasks.render`, which dvc.yaml runs."""

import sys

from flows._stage import flow_main, stage_flow

render_flow = stage_flow("render")

if __name__ == "__main__":
    sys.exit(flow_main(render_flow, description=__doc__))
