"""`python -m tasks.fetch [--params FILE]`: the pinned external files (the DVC stage command)."""

import sys

from tasks.params.fetch import FetchConfig
from tasks.stage import main


def run(cfg: FetchConfig):
    from tasks.fetch.run import run_fetch

    return run_fetch(cfg)


if __name__ == "__main__":
    sys.exit(main("fetch", FetchConfig, run, description=__doc__))
