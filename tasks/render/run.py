"""The render stage: sheets from the EMA generator, then the metrics."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.data import decode, read_export
from models.training_loop import resolve_device
from tasks.errors import DataError
from tasks.fileio import atomic_write_json
from tasks.render.config import RenderConfig
from tasks.render.metrics import (Tagger, attribute_accuracy, binarize, frechet_of_features, load_tagger)
from tasks.render.sheets import generate, load_generator, render_sheets

log = logging.getLogger(__name__)


@dataclass
class RenderSummary:
    sheets: dict[str, Path]
    metrics: dict
    step: int = 0
    samples_dir: str = ""
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        acc, fd = self.metrics["attribute_accuracy"], self.metrics["frechet_distance"]
        lines = ["# render", "", f"Generator after step {self.step}; {len(self.sheets)} sheets in `{self.samples_dir}`.",
                 "", "| sheet | file |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in self.sheets.items() if not k.startswith("attributes/")]
        if not acc["available"]:
            accuracy = f"unavailable ({acc['reason']})"
        elif acc.get("mean") is None:
            accuracy = f"no attribute could be read back from the {acc.get('n', 0)} generated images"
        else:
            accuracy = f"mean {acc['mean']:.3f}, hair {acc['hair_color']}, eyes {acc['eye_color']}"
        lines += ["", f"- attribute accuracy: {accuracy}",
                  "- Frechet distance: " + (f"{fd['value']:.3f}" if fd["available"] else
                                            f"unavailable ({fd['reason']})")]
        return "\n".join(lines) + "\n"


def evaluate(G, sampler, tagger: Tagger | None, reason: str, real_images, n: int, seed: int, batch: int) -> dict:
    """attribute_accuracy and frechet_distance sections (each with available / reason)."""
    if tagger is None or n == 0:
        why = reason or "render.eval_samples is 0"
        return {"attribute_accuracy": {"available": False, "reason": why},
                "frechet_distance": {"available": False, "reason": why}}
    gen = torch.Generator(device=sampler.device)
    gen.manual_seed(seed + 1)
    z = torch.randn(n, G.cfg.z_dim, device=sampler.device, generator=gen)
    cond = sampler.sample(n, gen)
    fake = generate(G, z, cond, batch)
    out = {"attribute_accuracy": attribute_accuracy(cond.cpu().numpy(), binarize(tagger.probabilities(fake)))}
    f_fake = tagger.features(fake) if hasattr(tagger, "features") else None
    if f_fake is None:
        out["frechet_distance"] = {"available": False, "reason": f"tagger {getattr(tagger, 'name', '?')} has no features"}
    else:
        real = real_images()
        if len(real) < 2:
            out["frechet_distance"] = {"available": False, "reason": "fewer than 2 real faces"}
        else:
            f_real = tagger.features(real)
            out["frechet_distance"] = {"available": True, "value": frechet_of_features(f_real, f_fake),
                                       "n_real": int(len(real)), "n_fake": int(n),
                                       "features": getattr(tagger, "name", "tagger")}
    return out


def real_sample(export_path: str | os.PathLike, n: int, size: int, seed: int) -> np.ndarray:
    if not Path(export_path).exists():
        raise DataError(f"{export_path} does not exist (run the train stage first)")
    _, pngs, _ = read_export(export_path)
    pick = np.random.default_rng(seed).permutation(len(pngs))[:n]
    return np.stack([decode(pngs[i], size) for i in sorted(pick)]) if len(pick) else np.zeros((0, size, size, 3), np.uint8)


def run_render(params, tagger: Tagger | None = None) -> RenderSummary:
    cfg: RenderConfig = params.render
    try:
        device = resolve_device(cfg.device)
    except RuntimeError as e:
        raise DataError(str(e)) from None
    G, sampler, meta = load_generator(params.train.generator, device)
    sheets = render_sheets(G, sampler, cfg.out.samples, seed=cfg.seed, grid=cfg.grid, variations=cfg.variations,
                           fixed_tag_rows=cfg.fixed_tag_rows, pairs=cfg.interpolation_pairs,
                           steps=cfg.interpolation_steps, batch=cfg.batch)
    reason = ""
    if tagger is None:
        tagger, reason = load_tagger(params, cfg.tagger)
    if tagger is None:
        log.info("render: tagger metrics unavailable: %s", reason)
    metrics = evaluate(G, sampler, tagger, reason,
                       lambda: real_sample(params.train.out.data, cfg.eval_samples, G.cfg.image_size, cfg.seed),
                       cfg.eval_samples, cfg.seed, cfg.batch)
    metrics["step"] = int(meta.get("step", 0))
    atomic_write_json(cfg.out.metrics, metrics)
    return RenderSummary(sheets, metrics, int(meta.get("step", 0)), cfg.out.samples)
