"""Sample sheets from a trained generator: a random grid, a row per hair colour with fixed
noise, fixed tags with varied noise, spherical interpolation, and one sheet per attribute."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.conditioning import TagSampler, check_frequencies
from models.dragan import Generator
from tasks.artifacts.generator import load_generator
from tasks.artifacts.tags import HAIR_COLOR_SLICE, MGM_TAGS
from tasks.errors import DataError
from tasks.fileio import atomic_open

log = logging.getLogger(__name__)


def load_sampled(path: str | os.PathLike, device="cpu") -> tuple[Generator, TagSampler, dict]:
    """The EMA generator (tasks.artifacts.generator), the tag sampler of its training data, its metadata."""
    G, cfg, meta = load_generator(path, device)
    try:
        freqs = json.loads(meta["sampler"])
        check_frequencies(freqs, cfg.n_tags)
        sampler = TagSampler(freqs, device)
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path}: no usable tag frequencies in its metadata (`sampler`): {e}") from None
    return G, sampler, meta


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b at fractions t (falls back to lerp when parallel)."""
    t = t.reshape(-1, 1).to(a)
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
    return torch.where(so.abs() < 1e-6, (1 - t) * a + t * b, out)


@torch.no_grad()
def generate(G: Generator, z: torch.Tensor, tags: torch.Tensor, batch: int = 64) -> np.ndarray:
    """uint8 images (N, H, W, 3)."""
    out = []
    for i in range(0, z.shape[0], batch):
        x = G(z[i:i + batch], tags[i:i + batch]).float()
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, G.cfg.image_size, G.cfg.image_size, 3), np.uint8)


def tile(images: np.ndarray, rows: int, cols: int) -> Image.Image:
    n, h, w, _ = images.shape
    sheet = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i in range(min(n, rows * cols)):
        r, c = divmod(i, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i]
    return Image.fromarray(sheet)


def save_png(img: Image.Image, path: Path) -> Path:
    with atomic_open(path, "wb") as f:
        img.save(f, "PNG")
    return path


def render_sheets(G: Generator, sampler: TagSampler, out_dir: str | os.PathLike, *, seed: int = 0, grid: int = 8,
                  variations: int = 8, fixed_tag_rows: int = 4, pairs: int = 4, steps: int = 8,
                  batch: int = 64) -> dict[str, Path]:
    """Write every sheet under out_dir; returns {name: path}."""
    out_dir, dev, zd = Path(out_dir), sampler.device, G.cfg.z_dim
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    written: dict[str, Path] = {}

    def noise(n):
        return torch.randn(n, zd, device=dev, generator=gen)

    n = grid * grid
    written["grid"] = save_png(tile(generate(G, noise(n), sampler.sample(n, gen), batch), grid, grid),
                               out_dir / "grid.png")
    # fixed noise (and other tags) per column, a row per hair colour
    z, base = noise(variations), sampler.sample(variations, gen)
    hair = range(HAIR_COLOR_SLICE.start, HAIR_COLOR_SLICE.stop)
    zs = z.repeat(len(hair), 1)
    tags = torch.cat([sampler.set_group(base, j) for j in hair])
    written["hair_colors"] = save_png(tile(generate(G, zs, tags, batch), len(hair), variations),
                                      out_dir / "hair_colors.png")
    # fixed tags per row, noise varies along it
    rows = sampler.sample(fixed_tag_rows, gen).repeat_interleave(variations, 0)
    written["fixed_tags"] = save_png(tile(generate(G, noise(len(rows)), rows, batch), fixed_tag_rows, variations),
                                     out_dir / "fixed_tags.png")
    # spherical interpolation of noise, linear interpolation of tags, between two characters per row
    za, zb, ca, cb = noise(pairs), noise(pairs), sampler.sample(pairs, gen), sampler.sample(pairs, gen)
    t = torch.linspace(0, 1, steps, device=dev)
    zi = torch.cat([slerp(za[i:i + 1].expand(steps, -1), zb[i:i + 1].expand(steps, -1), t) for i in range(pairs)])
    ci = torch.cat([(1 - t)[:, None] * ca[i] + t[:, None] * cb[i] for i in range(pairs)])
    written["interpolation"] = save_png(tile(generate(G, zi, ci, batch), pairs, steps), out_dir / "interpolation.png")
    # one sheet per attribute: top row without it, bottom row with it (same noise, same other tags)
    z, base = noise(variations), sampler.sample(variations, gen)
    for j, name in enumerate(MGM_TAGS[:G.cfg.n_tags]):
        off = base.clone()
        off[:, j] = 0
        imgs = generate(G, torch.cat([z, z]), torch.cat([off, sampler.set_group(base, j)]), batch)
        written[f"attributes/{name}"] = save_png(tile(imgs, 2, variations), out_dir / "attributes" / f"{name}.png")
    log.info("render: %d sheets -> %s", len(written), out_dir)
    return written
