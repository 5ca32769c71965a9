"""`python -m tasks.train [--params FILE]`: the training dataset, then the conditional DRAGAN (the DVC stage command)."""

import sys

from tasks.stage import main
from tasks.train.run import run_train

if __name__ == "__main__":
    sys.exit(main("train", run_train, description=__doc__))
