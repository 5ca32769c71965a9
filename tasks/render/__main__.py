"""`python -m tasks.render --data PATH --tagger PATH --detector PATH [--params FILE]`: sample sheets and
the generator's metrics (the DVC stage command; dvc.yaml hands it the training dataset, the tag
stage's tagger spec and the detect stage's detector spec; the generator is render.generator)."""

import sys

from tasks.stage import Input, main, require_environment

require_environment()  # one line, not an import error, from a shell without the project's environment
from tasks.params.render import RenderConfig  # noqa: E402

INPUTS = (Input("data", "the training dataset: real faces and the labels the generator learned (train.out.data)"),
          Input("tagger", "the tagger that made those labels (tag.out.tagger)"),
          Input("detector", "the detector settings of the faces (detect.out.detector)"))


def run(cfg: RenderConfig, data: str, tagger: str, detector: str):
    from tasks.render.run import run_render

    return run_render(cfg, data, tagger, detector)


if __name__ == "__main__":
    sys.exit(main("render", RenderConfig, run, description=__doc__, inputs=INPUTS))
