"""Tiny generators in the train stage's generator.safetensors format, exported like the stage does."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.dragan import Generator
from tasks.params.export import ExportConfig, ExportOut
from tasks.params.train import ModelConfig
from tasks.typed import to_dict

TINY = dict(image_size=32, g_channels=8, g_blocks=1, d_channels=(8, 16))


def randomize_batchnorm(g, spread: float, var: tuple[float, float]):
    """Give every BatchNorm non-trivial statistics, so folding it into the convs is really tested."""
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, spread)
                m.running_var.uniform_(*var)
                m.weight.normal_(1.0, spread)
                m.bias.normal_(0, spread)
    return g


def make_generator_file(path: Path, seed: int = 0, sampler: dict | None = None, **model) -> Path:
    """A random generator (BatchNorm statistics randomised too, so folding is exercised) saved as
    models/training_loop.py saves the EMA generator: `g_ema.*` tensors + model config metadata."""
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**TINY, **model})
    g = randomize_batchnorm(Generator(cfg).eval(), spread=0.2, var=(0.5, 2.0))
    meta = {"model": json.dumps(to_dict(cfg)), "step": "7", "version": "test"}
    if sampler is not None:
        meta["sampler"] = json.dumps(sampler)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"g_ema.{k}": v.contiguous() for k, v in g.state_dict().items()}, str(path), metadata=meta)
    return path


def export_config(root: Path, **kw) -> ExportConfig:
    out = ExportOut(onnx=str(root / "export/generator.onnx"), web=str(root / "model/generator.onnx"),
                    manifest=str(root / "model/model.json"), report=str(root / "export/report.json"),
                    metrics=str(root / "export/metrics.json"))
    return ExportConfig(out=out, **kw)
