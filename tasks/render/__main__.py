"""`python -m tasks.render [--params FILE]`: sample sheets and the generator's metrics (the DVC stage command)."""

import sys

from tasks.render.run import run_render
from tasks.stage import main

if __name__ == "__main__":
    sys.exit(main("render", run_render, description=__doc__))
