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


def make_training_files(root: Path, trained: list[str], known_off: list[str] = (), faces: int = 20,
                        holdout_only: list[str] = ()) -> tuple[Path, Path]:
    """A training dataset (train.out.data) and render's attributes.json for the export's manifest:
    every colour known (cycling through the group), the `trained` independent tags on for half the
    faces, `known_off` known and always off, `holdout_only` on only on held-out faces, the rest unknown."""
    from tasks.artifacts.tags import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, INDEPENDENT_SLICE, MGM_TAGS
    from tasks.artifacts.trainset import HOLDOUT, TRAIN, write_dataset

    rows, splits = [], []
    for i in range(faces + 2):
        a = [-1] * len(MGM_TAGS)
        for sl in (HAIR_COLOR_SLICE, EYE_COLOR_SLICE):
            a[sl] = [0] * (sl.stop - sl.start)
            a[sl.start + i % (sl.stop - sl.start)] = 1
        for t in trained:
            if INDEPENDENT_SLICE.start <= MGM_TAGS.index(t) < INDEPENDENT_SLICE.stop:
                a[MGM_TAGS.index(t)] = i % 2
        for t in known_off:
            a[MGM_TAGS.index(t)] = 0
        held = i >= faces
        for t in holdout_only:
            a[MGM_TAGS.index(t)] = 1 if held else 0
        rows.append(a)
        splits.append(HOLDOUT if held else TRAIN)
    data = root / "train/data.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    write_dataset(data, [f"f{i:03d}" for i in range(len(rows))], [b"img%d" % i for i in range(len(rows))], rows,
                  splits, {"moeflow.tagger": "test"})

    def row(agree, read, reason=None):
        r = {"samples": {"agreement": agree, "known": 50, "read": read},
             "real": {"agreement": None if reason else 0.9, "known": 0 if reason else 20, "read": 0 if reason else 20}}
        return {**r, "reason": reason} if reason else r

    names = ["hair_color", "eye_color", *MGM_TAGS[INDEPENDENT_SLICE]]
    detail = {"tagger": "test", "model_px": 32, "attributes": {
        n: row(1.0, 2) if n == "eye_color"  # two samples read: too few for a percentage
        else row(0.8125, 16) if n in ("hair_color",) or n in trained
        else row(None, 0, "no training face has this attribute known (the tag backend cannot say)") for n in names}}
    attributes = root / "render/attributes.json"
    attributes.parent.mkdir(parents=True, exist_ok=True)
    attributes.write_text(json.dumps(detail))
    return data, attributes
