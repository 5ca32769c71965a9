"""`python -m tasks.tag --faces PATH --crops PATH [--params FILE]`: the 34 Make.Girls.Moe tags for every
reviewed face (the DVC stage command; dvc.yaml hands it review's and detect's outputs)."""

import sys

from tasks.stage import Input, main, require_environment

require_environment()  # one line, not an import error, from a shell without the project's environment
from tasks.params.tag import TagConfig  # noqa: E402

INPUTS = (Input("faces", "the reviewed faces (review.out.faces)"),
          Input("crops", "their crop shards (detect.out.crops)"))


def run(cfg: TagConfig, faces: str, crops: str):
    from tasks.tag.run import run_tag

    return run_tag(cfg, faces, crops)


if __name__ == "__main__":
    sys.exit(main("tag", TagConfig, run, description=__doc__, inputs=INPUTS))
