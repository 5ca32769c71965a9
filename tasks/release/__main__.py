"""`python -m tasks.release [--params FILE]`: write the release manifest, the dataset as URLs and labels
(data/release/; the DVC stage command)."""

import sys

from tasks.release.run import release
from tasks.stage import main

if __name__ == "__main__":
    sys.exit(main("release", release, description=__doc__))
