"""The generator's metrics: attribute accuracy (generated images tagged by the tag stage's
backend, agreement with their conditioning per attribute) and a Frechet distance between
generated and real faces on the tag network's features. Both are reported as unavailable,
with the reason, when no usable tagger / feature backend is present."""

from __future__ import annotations

import importlib
import logging
from typing import Protocol

import numpy as np

from tasks.tag.schema import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, INDEPENDENT_SLICE, MGM_TAGS

log = logging.getLogger(__name__)


class Tagger(Protocol):
    """What render needs from the tag stage's backend."""

    name: str

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, 34) probabilities in MGM_TAGS order (NaN where it cannot say) for uint8 (N, H, W, 3)."""

    def features(self, images: np.ndarray) -> np.ndarray | None:
        """(N, D) features for the Frechet distance, or None when the backend has none."""


def load_tagger(params, mode: str = "auto") -> tuple[Tagger | None, str]:
    """The tag stage's backend as a Tagger, or (None, why not)."""
    if mode == "none":
        return None, "render.tagger is none"
    try:
        mod = importlib.import_module("tasks.tag.backends")
    except ImportError as e:
        return None, f"no tag backend module (tasks.tag.backends: {e})"
    factory = getattr(mod, "load_tagger", None)
    if factory is None:
        return None, "tasks.tag.backends has no load_tagger(params)"
    try:
        tagger = factory(params)
    except Exception as e:  # noqa: BLE001 - missing weights etc.: the metric is unavailable, not the stage
        return None, f"tag backend unusable: {type(e).__name__}: {e}"
    if tagger is None or not hasattr(tagger, "probabilities"):
        return None, "tag backend offers no probabilities()"
    return tagger, ""


def binarize(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Like the tag stage: argmax within hair / eye colour, threshold elsewhere; -1 where unknown."""
    p = np.asarray(probs, dtype=np.float64)
    out = np.where(np.isnan(p), -1, (p >= threshold).astype(np.int8)).astype(np.int8)
    for sl in (HAIR_COLOR_SLICE, EYE_COLOR_SLICE):
        block = p[:, sl]
        known = ~np.isnan(block).any(1)
        out[:, sl] = np.where(known[:, None], 0, -1)
        pick = np.nanargmax(np.where(np.isnan(block), -np.inf, block), axis=1)
        out[np.flatnonzero(known), sl.start + pick[known]] = 1
    return out


def attribute_accuracy(cond: np.ndarray, predicted: np.ndarray) -> dict:
    """Agreement of the tagger's binarised tags with the conditioning: the colour groups as one
    attribute each (the argmax matches), every other tag on its own; unknown entries left out."""
    cond, predicted = np.asarray(cond) > 0.5, np.asarray(predicted)
    res: dict = {"available": True, "n": int(len(cond)), "per_tag": {}}
    for name, sl in (("hair_color", HAIR_COLOR_SLICE), ("eye_color", EYE_COLOR_SLICE)):
        known = (predicted[:, sl] >= 0).all(1)
        hit = (cond[:, sl].argmax(1) == predicted[:, sl].argmax(1))[known]
        res[name] = float(hit.mean()) if hit.size else None
    for j in range(INDEPENDENT_SLICE.start, INDEPENDENT_SLICE.stop):
        known = predicted[:, j] >= 0
        res["per_tag"][MGM_TAGS[j]] = float((cond[known, j] == (predicted[known, j] == 1)).mean()) if known.any() else None
    vals = [v for v in [res["hair_color"], res["eye_color"], *res["per_tag"].values()] if v is not None]
    res["mean"] = float(np.mean(vals)) if vals else None
    return res


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2): the Frechet distance between two
    Gaussians, with square roots by symmetric eigendecomposition (no scipy)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    r1 = _sqrtm_psd(s1)
    cross = np.linalg.eigvalsh((r1 @ s2 @ r1 + (r1 @ s2 @ r1).T) / 2)
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(cross, 0, None)).sum())
    return max(value, 0.0)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_of_features(real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(*feature_stats(real), *feature_stats(fake))
