"""`python -m tasks.fetch [--params FILE]`: the pinned external files (the DVC stage command)."""

import sys

from tasks.fetch.run import run_fetch
from tasks.stage import main

if __name__ == "__main__":
    sys.exit(main("fetch", lambda params: run_fetch(params.fetch), description=__doc__))
