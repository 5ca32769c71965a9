"""`python -m tasks.review merge ...`: the reviewer's merge (tasks.review.cli)."""

import sys

from tasks.review.cli import main

sys.exit(main())
