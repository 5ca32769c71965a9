"""`python -m flows.export`: the EMA generator to ONNX for the web page (see tasks/export)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from flows._stage import publish_markdown, run_stage, stage_flow
from tasks.config import load_params
from tasks.errors import ConfigError

log = logging.getLogger(__name__)


def generator_path(params) -> Path:
    """export.generator, or the train stage's <train.out.dir>/generator.safetensors."""
    if params.export.generator:
        return Path(params.export.generator)
    train = getattr(params, "train", None)
    if train is None:
        raise ConfigError("export.generator: null, but params has no train section to take the generator from")
    return Path(train.generator)


@stage_flow("export")
def export_flow(params_path: str = "params.yaml") -> dict:
    from tasks.export.run import markdown, run_export

    params = load_params(params_path)
    cfg = params.export
    src = generator_path(params)
    log.info("export: %s -> %s (+ %s variant %s)", src, cfg.out.onnx, cfg.variant, cfg.out.web)
    report = run_export(cfg, src)
    publish_markdown("export-summary", markdown(report, cfg), "export: ONNX sizes, parity with PyTorch, CPU speed")
    return report


if __name__ == "__main__":
    sys.exit(run_stage(export_flow, description=__doc__))
