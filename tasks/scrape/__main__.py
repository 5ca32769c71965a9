"""`python -m tasks.scrape [--params FILE]`: collect images into data/raw (the DVC stage command).
Its inputs are its own params: the source (scrape.folder, scrape.getchu_games, scrape.release, the
web) and optout.csv (scrape.optout)."""

import sys

from tasks.stage import main, require_environment

require_environment()  # one line, not an import error, from a shell without the project's environment
from tasks.params.scrape import ScrapeConfig  # noqa: E402


def run(cfg: ScrapeConfig):
    from tasks.scrape.run import scrape

    return scrape(cfg)


if __name__ == "__main__":
    sys.exit(main("scrape", ScrapeConfig, run, description=__doc__))
