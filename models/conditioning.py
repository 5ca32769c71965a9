"""Conditioning tags for generated images, sampled like the data: each one-hot group (hair
colour, eye colour) from its dataset frequencies, every other tag independently at its
dataset frequency. Unknown entries (-1) are left out of the frequencies."""

from __future__ import annotations

import math

import numpy as np
import torch

from tasks.artifacts.tags import N_TAGS, ONE_HOT_GROUPS


def tag_frequencies(attributes: np.ndarray, groups=ONE_HOT_GROUPS) -> dict:
    """{"groups": [[start, stop, probs...]], "independent": {index: p}} from an (N, T) int8 array."""
    a = np.asarray(attributes, dtype=np.int8)
    n_tags = a.shape[1] if a.ndim == 2 else N_TAGS
    grouped = set()
    out_groups = []
    for start, stop in groups:
        block = a[:, start:stop] if len(a) else np.zeros((0, stop - start), np.int8)
        ok = (block >= 0).all(1) & ((block == 1).sum(1) == 1)
        counts = block[ok].astype(np.int64).sum(0).astype(np.float64) + 0.0
        probs = counts / counts.sum() if counts.sum() > 0 else np.full(stop - start, 1.0 / (stop - start))
        out_groups.append([int(start), int(stop), [float(p) for p in probs]])
        grouped.update(range(start, stop))
    indep = {}
    for j in range(n_tags):
        if j in grouped:
            continue
        col = a[:, j] if len(a) else np.zeros(0, np.int8)
        known = col >= 0
        indep[j] = float((col[known] == 1).mean()) if known.any() else 0.0
    return {"n_tags": int(n_tags), "groups": out_groups, "independent": {str(k): v for k, v in indep.items()}}


def check_frequencies(freqs, n_tags: int) -> None:
    """Raise ValueError, one line, unless `freqs` is what tag_frequencies makes for `n_tags` tags:
    groups of probabilities (finite, >= 0, some > 0) over [start, stop) within the tags, and
    independent tags (by index) with a probability in [0, 1]. What a generator file carries is
    checked before a tensor is sized by it."""
    def finite(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(freqs, dict) or not isinstance(freqs.get("groups"), list) or not isinstance(
            freqs.get("independent"), dict):
        raise ValueError("expected a mapping with n_tags, groups and independent")
    if freqs.get("n_tags") != n_tags:
        raise ValueError(f"n_tags {freqs.get('n_tags')!r}, the generator takes {n_tags}")
    for g in freqs["groups"]:
        if not (isinstance(g, list) and len(g) == 3 and all(isinstance(v, int) for v in g[:2])
                and 0 <= g[0] < g[1] <= n_tags and isinstance(g[2], list) and len(g[2]) == g[1] - g[0]
                and all(finite(p) and p >= 0 for p in g[2]) and sum(g[2]) > 0):
            raise ValueError(f"group {str(g)[:80]} is not [start, stop, probabilities] within {n_tags} tags")
    for k, p in freqs["independent"].items():
        if not (isinstance(k, str) and k.isdigit() and int(k) < n_tags and finite(p) and 0 <= p <= 1):
            raise ValueError(f"independent tag {str(k)[:20]!r}: {str(p)[:20]} is not a tag index with a probability")


class TagSampler:
    """Draws (n, n_tags) float 0/1 conditioning vectors on `device` with a given generator."""

    def __init__(self, freqs: dict, device: torch.device | str = "cpu"):
        self.freqs = freqs
        self.n_tags = int(freqs["n_tags"])
        self.device = torch.device(device)
        self.groups = [(int(s), int(e), torch.tensor(p, dtype=torch.float32, device=self.device))
                       for s, e, p in freqs["groups"]]
        idx = sorted(int(k) for k in freqs["independent"])
        self.indep_idx = torch.tensor(idx, dtype=torch.long, device=self.device)
        self.indep_p = torch.tensor([freqs["independent"][str(k)] for k in idx], dtype=torch.float32,
                                    device=self.device)

    @classmethod
    def from_attributes(cls, attributes: np.ndarray, device="cpu", groups=ONE_HOT_GROUPS) -> "TagSampler":
        return cls(tag_frequencies(attributes, groups), device)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        out = torch.zeros(n, self.n_tags, device=self.device)
        for s, e, p in self.groups:
            pick = torch.multinomial(p, n, replacement=True, generator=generator)
            out[torch.arange(n, device=self.device), s + pick] = 1.0
        if len(self.indep_idx):
            draw = torch.rand(n, len(self.indep_idx), device=self.device, generator=generator)
            out[:, self.indep_idx] = (draw < self.indep_p).float()
        return out

    def set_group(self, tags: torch.Tensor, index: int) -> torch.Tensor:
        """Copy of `tags` with tag `index` switched on (and its one-hot group mates off)."""
        tags = tags.clone()
        for s, e, _ in self.groups:
            if s <= index < e:
                tags[:, s:e] = 0
        tags[:, index] = 1
        return tags
