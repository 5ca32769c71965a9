"""`python -m tasks.scrape [--params FILE]`: collect images into data/raw (the DVC stage command)."""

import sys

from tasks.scrape.run import scrape
from tasks.stage import main

if __name__ == "__main__":
    sys.exit(main("scrape", lambda params: scrape(params.scrape), description=__doc__))
