"""`python tests/support/dask_log_level.py true|false`: set up a stage's logging (tasks.stage.setup_logging,
verbose or not), then import Dask's distributed and print its logger's effective level. A process of
its own: distributed reads its logging config once, when first imported."""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.stage import setup_logging  # noqa: E402

setup_logging(sys.argv[1] == "true")
import distributed  # noqa: E402,F401 - configures its loggers from the environment on import

print(logging.getLogger("distributed").getEffectiveLevel())
