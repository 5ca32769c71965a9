"""The tagger's metrics: attribute agreement (the tag stage's tagger reads the samples back,
against their conditioning, next to the same backend against the labels of real crops brought
to the model's resolution: its ceiling) and a Frechet distance on the tagger's features.

Samples are binarised exactly as the tag stage binarised the training labels
(`tasks.artifacts.tags.binarize` with the tagger spec's thresholds: argmax in the colour groups,
`tag.threshold` / `tag.thresholds` elsewhere)."""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from tasks.artifacts.tags import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, INDEPENDENT_SLICE, MGM_TAGS
from tasks.render.report import unavailable

log = logging.getLogger(__name__)

GROUPS = (("hair_color", HAIR_COLOR_SLICE), ("eye_color", EYE_COLOR_SLICE))
MIN_READ = 10  # an attribute the tagger reads on fewer real crops than this is not scored


class Tagger(Protocol):
    """What render needs from a tagger (tasks.taggers.backends.ArrayTagger)."""

    name: str

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, 34) probabilities in MGM_TAGS order (NaN where it cannot say) for uint8 (N, H, W, 3)."""

    def features(self, images: np.ndarray) -> np.ndarray | None:
        """(N, D) features for the Frechet distance, or None when the backend has none."""


def load_tagger(spec: str, mode: str = "auto") -> tuple[Tagger | None, object | None, str]:
    """(the tagger the tag stage used, its settings, "") from the tagger spec at `spec`; or (None, None,
    why not): render.tagger none, or a tagger that cannot be built here (missing weights and the like:
    the metric is then unavailable, not the stage)."""
    if mode == "none":
        return None, None, "render.tagger is none"
    from tasks.artifacts.tagger import read_tagger_spec
    from tasks.taggers.backends import load_tagger as load_backend

    cfg, _ = read_tagger_spec(spec)  # a missing or malformed spec is the user's to fix: one error line
    try:
        return load_backend(cfg), cfg, ""
    except Exception as e:  # noqa: BLE001 - missing weights etc.: the metric is unavailable, not the stage
        return None, cfg, f"tag backend unusable: {type(e).__name__}: {e}"


def attributes() -> list[tuple[str, slice | int]]:
    """The scored attributes: each colour group as one, every other tag on its own."""
    return [*GROUPS, *((MGM_TAGS[j], j) for j in range(INDEPENDENT_SLICE.start, INDEPENDENT_SLICE.stop))]


def agreement(target: np.ndarray, predicted: np.ndarray) -> dict[str, dict]:
    """Per attribute: over the images whose target is known, the share the tagger reads
    (`read`) and, among those, the share it reads as the target (`agreement`).
    target, predicted: int8 (N, 34) of 1 / 0 / -1 (unknown)."""
    target, predicted = np.asarray(target), np.asarray(predicted)
    out: dict[str, dict] = {}
    for name, where in attributes():
        if isinstance(where, slice):
            t, p = target[:, where], predicted[:, where]
            known = (t >= 0).all(1) & ((t == 1).sum(1) == 1)
            read = known & (p >= 0).all(1) & ((p == 1).sum(1) == 1)
            hit = read & (t.argmax(1) == p.argmax(1))
        else:
            known = target[:, where] >= 0
            read = known & (predicted[:, where] >= 0)
            hit = read & (target[:, where] == predicted[:, where])
        n_known, n_read = int(known.sum()), int(read.sum())
        out[name] = {"known": n_known, "read": n_read, "agreement": float(hit.sum() / n_read) if n_read else None}
    return out


def attribute_section(tagger_name: str, samples: dict[str, dict], ceiling: dict[str, dict], model_px: int,
                      n: int) -> tuple[dict, dict]:
    """(the compact metrics section, the per-attribute detail). An attribute is scored when the
    data knows it and the tagger reads it on at least MIN_READ real crops at the model's
    resolution; otherwise the detail says why not."""
    detail: dict = {"tagger": tagger_name, "model_px": model_px, "attributes": {}}
    scored: dict[str, tuple[float, float, float]] = {}
    for name, _ in attributes():
        s, c = samples[name], ceiling[name]
        row = {"samples": s, "real": c}
        if c["known"] == 0:
            row["reason"] = "no training face has this attribute known (the tag backend cannot say)"
        elif c["read"] < MIN_READ:
            row["reason"] = (f"the {tagger_name} tagger reads it on {c['read']} of {c['known']} real crops at "
                             f"{model_px} px (fewer than {MIN_READ}): it cannot work at this resolution")
        elif s["read"] == 0:
            row["reason"] = f"the {tagger_name} tagger reads it on none of the {s['known']} samples"
            scored[name] = (0.0, c["agreement"], 0.0)  # a tagger that works on reals but never on samples: 0
        else:
            scored[name] = (s["agreement"], c["agreement"], s["read"] / s["known"])
        detail["attributes"][name] = row
    if not scored:
        reasons = sorted({r["reason"] for r in detail["attributes"].values() if "reason" in r})
        return unavailable(f"no attribute can be scored: {'; '.join(reasons)}"), detail
    section: dict = {"available": True, "tagger": tagger_name, "n": int(n), "scored": len(scored)}
    for name in ("hair_color", "eye_color"):
        if name in scored:
            a, c, r = scored[name]
            section.update({name: round(a, 4), f"{name}_ceiling": round(c, 4), f"{name}_read": round(r, 4)})
    section["mean"] = round(float(np.mean([v[0] for v in scored.values()])), 4)
    section["mean_ceiling"] = round(float(np.mean([v[1] for v in scored.values()])), 4)
    return section, detail


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
