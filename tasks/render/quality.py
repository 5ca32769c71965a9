"""Generator quality metrics that need no downloaded network.

- detectability: the share of samples in which the detect stage's own detectors find a face,
  next to the same share for real crops brought to the model's resolution, and their ratio;
- diversity: the mean distance from each sample to its nearest other sample, next to the same
  figure for as many real crops (mode collapse and the "average face" show here);
- memorisation: each sample's distance to its nearest training face, next to held-out real
  faces' distance to the training set.

Every image is compared as the detect stage would see it: reduced to the model's resolution
(real crops), then enlarged to the detect stage's crop size (`detect.size`) with Lanczos.
Distances are RMS differences of RGB in [0, 1] at `DISTANCE_SIZE` px (cheap for 40k faces)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

DISTANCE_SIZE = 32  # side at which distances are measured (the demo model's own resolution)


def resize(images: np.ndarray, size: int, resample=Image.LANCZOS) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, size, size, 3)."""
    if len(images) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    if images.shape[1] == size and images.shape[2] == size:
        return images
    return np.stack([np.asarray(Image.fromarray(a).resize((size, size), resample)) for a in images])


@dataclass(frozen=True)
class NamedDetector:
    name: str
    detect: Callable[[np.ndarray, Image.Image], list]


def detect_share(images: np.ndarray, detector: NamedDetector, view_size: int) -> float:
    """Share of images (uint8 (N, H, W, 3)) in which `detector` finds at least one face, each enlarged to view_size."""
    if len(images) == 0:
        raise ValueError("no images to detect faces in")
    hits = 0
    for a in resize(images, view_size):
        hits += bool(detector.detect(a, Image.fromarray(a)))
    return hits / len(images)


def detectability(fake: np.ndarray, real: np.ndarray, detectors: Sequence[NamedDetector], view_size: int,
                  headline: str) -> dict:
    """Per detector: the share of samples and of real crops with a face, and their ratio; `ratio`
    is the headline detector's (the one the detect stage runs)."""
    out: dict = {"available": True, "n": int(len(fake)), "n_real": int(len(real)), "view_px": int(view_size)}
    for d in detectors:
        f, r = detect_share(fake, d, view_size), detect_share(real, d, view_size)
        out[d.name] = round(f, 4)
        out[f"real_{d.name}"] = round(r, 4)
        out[f"ratio_{d.name}"] = round(f / r, 4) if r > 0 else 0.0
    if f"ratio_{headline}" not in out:
        raise ValueError(f"detector {headline!r} was not run")
    out["detector"] = headline
    out["ratio"] = out[f"ratio_{headline}"]
    return out


def _flat(images: np.ndarray) -> torch.Tensor:
    small = resize(images, DISTANCE_SIZE, Image.BILINEAR)
    # float64: cdist takes the matrix-product route (|a|² + |b|² - 2ab), whose float32 rounding leaves
    # ~4e-4 between identical images; in float64 it is under 1e-7 (a copy measures 0)
    return torch.from_numpy(small.reshape(len(small), -1).astype(np.float64) / 255.0)


def nearest_distances(a: np.ndarray, b: np.ndarray | None = None, chunk: int = 2048) -> np.ndarray:
    """For each image of `a`, the RMS distance to its nearest image of `b` (of `a` itself,
    excluding the image, when b is None)."""
    if b is not None:
        (best,), n = nearest_in_chunks([a], [b], chunk)
        if not n:
            raise ValueError("no images to compare with")
        return best
    xa = _flat(a)
    if len(xa) < 2:
        raise ValueError("need at least two images")
    best = torch.full((len(xa),), float("inf"))
    for i in range(0, len(xa), chunk):
        d = torch.cdist(xa, xa[i:i + chunk])
        rows = torch.arange(i, min(i + chunk, len(xa)))
        d[rows, rows - i] = float("inf")  # leave each image's distance to itself out
        best = torch.minimum(best, d.min(1).values)
    return (best / np.sqrt(xa.shape[1])).numpy()


def diversity(fake: np.ndarray, real: np.ndarray) -> dict:
    """Mean nearest-other-sample distance of the samples, of as many real crops, and the ratio."""
    f, r = float(nearest_distances(fake).mean()), float(nearest_distances(real).mean())
    return {"available": True, "n": int(len(fake)), "n_real": int(len(real)), "samples": round(f, 5),
            "real": round(r, 5), "ratio": round(f / r, 4) if r > 0 else 0.0}


def nearest_in_chunks(queries: Sequence[np.ndarray], chunks: Iterable[np.ndarray],
                      chunk: int = 2048) -> tuple[list[np.ndarray], int]:
    """For each image of each query set, the RMS distance to its nearest image in `chunks` (uint8
    arrays, one pass: the reference set need never be in memory at once); and how many images the
    chunks held."""
    xs = [_flat(q) for q in queries]
    best = [torch.full((len(x),), float("inf")) for x in xs]
    seen = 0
    for part in chunks:
        for i in range(0, len(part), chunk):
            xb = _flat(part[i:i + chunk])
            seen += len(xb)
            for k, x in enumerate(xs):
                if len(x):
                    best[k] = torch.minimum(best[k], torch.cdist(x, xb).min(1).values)
    dim = 3 * DISTANCE_SIZE * DISTANCE_SIZE
    return [(b / np.sqrt(dim)).numpy() for b in best], seen


def memorisation(fake: np.ndarray, heldout: np.ndarray, train: np.ndarray | Iterable[np.ndarray]) -> dict:
    """Samples' distance to their nearest training face against held-out real faces' distance to
    the training set: `ratio` (median vs median) well below 1 means the generator copies its
    training faces; `near_copies` is the share of samples nearer to a training face than 99% of
    held-out faces are. `train`: an array, or uint8 arrays one after another (one pass)."""
    (f, h), n_train = nearest_in_chunks([fake, heldout], [train] if isinstance(train, np.ndarray) else train)
    if not n_train:
        raise ValueError("no images to compare with")
    p1 = float(np.quantile(h, 0.01))
    return {"available": True, "n": int(len(fake)), "n_heldout": int(len(heldout)), "n_train": int(n_train),
            "samples_median": round(float(np.median(f)), 5), "heldout_median": round(float(np.median(h)), 5),
            "ratio": round(float(np.median(f) / np.median(h)), 4) if np.median(h) > 0 else 0.0,
            "near_copies": round(float((f < p1).mean()), 4)}
