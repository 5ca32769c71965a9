"""`python -m tasks.fetch [--params FILE]`: the pinned external files (the DVC stage command)."""

import sys

from tasks.stage import main, require_environment

require_environment()  # one line, not an import error, from a shell without the project's environment
from tasks.params.fetch import FetchConfig  # noqa: E402


def run(cfg: FetchConfig):
    from tasks.fetch.run import run_fetch

    return run_fetch(cfg)


if __name__ == "__main__":
    sys.exit(main("fetch", FetchConfig, run, description=__doc__))
