"""`python -m tasks.train --faces PATH --crops PATH --tags PATH [--params FILE]`: the training dataset,
then the conditional DRAGAN (the DVC stage command; dvc.yaml hands it review's, detect's and tag's outputs)."""

import sys

from tasks.stage import Input, main, require_environment

require_environment()  # one line, not an import error, from a shell without the project's environment
from tasks.params.train import RunConfig  # noqa: E402

INPUTS = (Input("faces", "the reviewed faces (review.out.faces)"),
          Input("crops", "their crop shards (detect.out.crops)"),
          Input("tags", "their tags (tag.out.tags)"))


def run(cfg: RunConfig, faces: str, crops: str, tags: str):
    from tasks.train.run import run_train

    return run_train(cfg, faces, crops, tags)


if __name__ == "__main__":
    sys.exit(main("train", RunConfig, run, description=__doc__, inputs=INPUTS))
