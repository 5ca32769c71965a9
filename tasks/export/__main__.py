"""`python -m tasks.export [--params FILE]`: the EMA generator (export.generator) to ONNX for the web
page (the DVC stage command)."""

import sys

from tasks.stage import main, require_environment

require_environment()  # one line, not an import error, from a shell without the project's environment
from tasks.params.export import ExportConfig  # noqa: E402


def run(cfg: ExportConfig):
    from tasks.export.run import run_stage

    return run_stage(cfg)


if __name__ == "__main__":
    sys.exit(main("export", ExportConfig, run, description=__doc__))
