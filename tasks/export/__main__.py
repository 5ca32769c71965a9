"""`python -m tasks.export --data PATH --attributes PATH [--params FILE]`: the EMA generator
(export.generator) to ONNX for the web page, with which tags it learned (the training dataset) and
how well it follows them (render's attributes.json): the DVC stage command."""

import sys

from tasks.stage import Input, main, require_environment

require_environment()  # one line, not an import error, from a shell without the project's environment
from tasks.params.export import ExportConfig  # noqa: E402

INPUTS = (Input("data", "the training dataset: which tags the generator learned (train.out.data)"),
          Input("attributes", "how well the generator follows each tag (render.out.attributes)"))


def run(cfg: ExportConfig, data: str, attributes: str):
    from tasks.export.run import run_stage

    return run_stage(cfg, data, attributes)


if __name__ == "__main__":
    sys.exit(main("export", ExportConfig, run, description=__doc__, inputs=INPUTS))
