"""`python -m tasks.web [--params FILE]`: the EMA generator to ONNX for the web page (the DVC stage `export`)."""

import sys

from tasks.stage import main
from tasks.web.run import run_stage

if __name__ == "__main__":
    sys.exit(main("export", run_stage, description=__doc__))
