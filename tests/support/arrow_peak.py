"""`python -m tests.support.arrow_peak DATASET`: run the export stage's training_tags on a training
dataset in a fresh process and print, as JSON, Arrow's peak allocation (the default memory pool's
max_memory) and the result's face count: what reading the dataset's tags costs, alone."""

from __future__ import annotations

import json
import sys

import pyarrow as pa

from tasks.export.honesty import training_tags

if __name__ == "__main__":
    before = pa.default_memory_pool().max_memory()
    result = training_tags(sys.argv[1])
    sys.stdout.write(json.dumps({"before": before, "max_memory": pa.default_memory_pool().max_memory(),
                                 "faces": result["faces"]}) + "\n")
