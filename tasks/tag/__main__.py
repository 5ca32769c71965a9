"""`python -m tasks.tag [--params FILE]`: the 34 Make.Girls.Moe tags for every reviewed face (the DVC stage command)."""

import sys

from tasks.stage import main
from tasks.tag.run import run_tag

if __name__ == "__main__":
    sys.exit(main("tag", run_tag, description=__doc__))
