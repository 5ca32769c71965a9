"""Named colours in CIELAB: hair and eye colour from the colours animeface measures.

sRGB (D65) → linear → XYZ → CIELAB; a colour's name is that of the nearest prototype by
CIEDE2000 (Sharma, Wu & Dalal 2005) with the lightness parametric factor kL =
`lightness_weight` (textiles use kL = 2: shading changes a hair colour's lightness far more
than its hue; CIEDE2000 also weights chroma and hue differences down for saturated colours,
so a brown's highlight is not an orange nor its shadow a black). The probabilities are a
softmax over each name's nearest-prototype distance, with a temperature in ΔE units.

The hair colour itself is estimated from a region, not one pixel: animeface samples one hair
colour per face (often a highlight or a shadow, and from a randomly initialised clustering),
so `measure_colors` clusters the hair region around the face box (k-means in Lab, skin-coloured
pixels left out) and takes the median of the largest cluster. animeface's random generator is
seeded before every detection, so a crop's measurement does not depend on what ran before it."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import io
import logging
import os

import numpy as np

log = logging.getLogger(__name__)

_M = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])

# Hair-region estimate (measure_colors): clusters, skin exclusion, minimum pixels for a region estimate.
HAIR_CLUSTERS = 3  # hair base tone / shadow or highlight / whatever else shares the region (ribbons, background)
SKIN_DELTA_E = 20.0  # CIE76 ΔE from animeface's skin colour under which a pixel counts as skin
MIN_HAIR_PIXELS = 20


def srgb_to_lab(rgb) -> np.ndarray:
    """sRGB 0-255 (..., 3) → CIELAB (..., 3)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = c @ _M.T / _WHITE
    d = 6 / 29
    f = np.where(xyz > d ** 3, np.cbrt(xyz), xyz / (3 * d * d) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def ciede2000(lab1, lab2, kL: float = 1.0, kC: float = 1.0, kH: float = 1.0) -> np.ndarray:
    """CIEDE2000 colour difference of CIELAB arrays (..., 3), broadcast (Sharma, Wu & Dalal 2005)."""
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, np.float64), -1, 0)
    c7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c7 / (c7 + 25.0 ** 7)))
    a1, a2 = (1 + g) * a1, (1 + g) * a2
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    h1, h2 = np.degrees(np.arctan2(b1, a1)) % 360, np.degrees(np.arctan2(b2, a2)) % 360
    achromatic = c1 * c2 == 0
    dh = h2 - h1
    dh = np.where(achromatic, 0.0, np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh)))
    d_l, d_c = L2 - L1, c2 - c1
    d_h = 2 * np.sqrt(c1 * c2) * np.sin(np.radians(dh / 2))
    l_m, c_m, hs = (L1 + L2) / 2, (c1 + c2) / 2, h1 + h2
    h_m = np.where(achromatic, hs, np.where(np.abs(h1 - h2) <= 180, hs / 2, np.where(hs < 360, (hs + 360) / 2, (hs - 360) / 2)))
    t = (1 - 0.17 * np.cos(np.radians(h_m - 30)) + 0.24 * np.cos(np.radians(2 * h_m))
         + 0.32 * np.cos(np.radians(3 * h_m + 6)) - 0.20 * np.cos(np.radians(4 * h_m - 63)))
    r_c = 2 * np.sqrt(c_m ** 7 / (c_m ** 7 + 25.0 ** 7))
    r_t = -np.sin(np.radians(60 * np.exp(-((h_m - 275) / 25) ** 2))) * r_c
    s_l = 1 + 0.015 * (l_m - 50) ** 2 / np.sqrt(20 + (l_m - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_m, 1 + 0.015 * c_m * t
    x_l, x_c, x_h = d_l / (kL * s_l), d_c / (kC * s_c), d_h / (kH * s_h)
    return np.sqrt(np.maximum(x_l ** 2 + x_c ** 2 + x_h ** 2 + r_t * x_c * x_h, 0.0))


class ColorNamer:
    """Nearest named colour (CIEDE2000, kL = lightness_weight) over a palette {name: [rgb prototypes]}, in `names` order."""

    def __init__(self, palette, names: tuple[str, ...], temperature: float = 8.0, lightness_weight: float = 1.0):
        self.names = tuple(n for n in names if n in palette)
        self.columns = [names.index(n) for n in self.names]  # where each palette name sits in `names`
        self.n = len(names)
        protos, owner = [], []
        for i, name in enumerate(self.names):
            for p in palette[name]:
                protos.append(p)
                owner.append(i)
        self.lab = srgb_to_lab(np.array(protos, dtype=np.float64))
        self.owner = np.array(owner)
        self.temperature = temperature
        self.kl = lightness_weight  # shading moves lightness more than hue

    def distances(self, rgb) -> np.ndarray:
        """(N, len(names)) ΔE00 to each name's nearest prototype (inf for names not in the palette)."""
        lab = srgb_to_lab(np.asarray(rgb, dtype=np.float64).reshape(-1, 3))
        d = ciede2000(lab[:, None, :], self.lab[None], kL=self.kl)
        out = np.full((len(lab), self.n), np.inf)
        for i, col in enumerate(self.columns):
            out[:, col] = d[:, self.owner == i].min(1)
        return out

    def probabilities(self, rgb) -> np.ndarray:
        d = self.distances(rgb)
        z = -(d - d.min(1, keepdims=True)) / self.temperature
        e = np.exp(z)
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    def name(self, rgb) -> list[str]:
        return [self.names[self.columns.index(int(i))] for i in self.distances(rgb).argmin(1)]


def measure_colors(png, refine_delta_e: float = 40.0) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """(hair rgb, eye rgb) of the most likely face animeface finds in a crop (PNG bytes or a PIL image), or None.

    refine_delta_e > 0: the hair colour is estimated from the hair region (`hair_color`), falling
    back to the median of the region's pixels within `refine_delta_e` of animeface's sample where
    too few non-skin pixels remain; 0 = animeface's raw sample."""
    import animeface
    from PIL import Image

    im = png.convert("RGB") if isinstance(png, Image.Image) else Image.open(io.BytesIO(png)).convert("RGB")
    seed_animeface()
    faces = animeface.detect(im)
    if not faces:
        return None
    f = max(faces, key=lambda f: f.likelihood)
    hair = (int(f.hair.color.r), int(f.hair.color.g), int(f.hair.color.b))
    if refine_delta_e > 0:
        skin = (f.skin.color.r, f.skin.color.g, f.skin.color.b)
        hair = hair_color(np.asarray(im, dtype=np.float64), f.face.pos, hair, skin, refine_delta_e)
    le, re_ = f.left_eye.color, f.right_eye.color
    eye = (round((le.r + re_.r) / 2), round((le.g + re_.g) / 2), round((le.b + re_.b) / 2))
    return hair, eye


def hair_region(rgb: np.ndarray, box) -> np.ndarray:
    """(N, 3) pixels around and above the face box: w/4 either side, h/2 above to h/3 into it (the fringe)."""
    h, w, _ = rgb.shape
    x0, x1 = max(0, box.x - box.width // 4), min(w, box.x + box.width + box.width // 4)
    y0, y1 = max(0, box.y - box.height // 2), min(h, box.y + box.height // 3)
    return rgb[y0:y1, x0:x1].reshape(-1, 3)


def hair_color(rgb: np.ndarray, box, sample: tuple[int, int, int], skin: tuple[int, int, int],
               delta_e: float = 40.0) -> tuple[int, int, int]:
    """Hair colour of a face: the median of the largest k-means cluster (Lab) of the non-skin hair-region pixels.

    The hair is the region's dominant colour once the skin is left out; its shadows and highlights
    form their own, smaller clusters, so the median of the largest one is the base tone."""
    region = hair_region(rgb, box)
    if not len(region):
        return sample
    lab = srgb_to_lab(region)
    hair = np.sqrt(((lab - srgb_to_lab(np.array(skin, np.float64))) ** 2).sum(-1)) >= SKIN_DELTA_E
    if hair.sum() < MIN_HAIR_PIXELS:
        return _near_sample(region, lab, sample, delta_e)
    members = kmeans(lab[hair], HAIR_CLUSTERS)
    largest = np.bincount(members, minlength=HAIR_CLUSTERS).argmax()
    return tuple(int(round(v)) for v in np.median(region[hair][members == largest], axis=0))


def _near_sample(region: np.ndarray, lab: np.ndarray, sample: tuple[int, int, int], delta_e: float) -> tuple[int, int, int]:
    close = np.sqrt(((lab - srgb_to_lab(np.array(sample, np.float64))) ** 2).sum(-1)) < delta_e
    if close.sum() < 5:
        return sample
    return tuple(int(round(v)) for v in np.median(region[close], axis=0))


def kmeans(x: np.ndarray, k: int, iters: int = 20) -> np.ndarray:
    """Cluster index per row of x (N, d); deterministic: centres start at the lightness (column 0) quantiles.

    Per column and per centre, without (N, k, d) temporaries: the same float operations in the
    same order as the broadcast form ((x - c) ** 2 summed over d left to right; a centre is the
    sequential sum of its members over their count, as x[members == j].mean(0) computes it), so
    the same clusters bit for bit, about 4x faster (tests/tag/test_tag.py checks the equivalence)."""
    k = min(k, len(x))
    centres = x[np.argsort(x[:, 0], kind="stable")[((np.arange(k) + 0.5) / k * len(x)).astype(int)]].copy()
    cols = [np.ascontiguousarray(x[:, c]) for c in range(x.shape[1])]
    members = np.zeros(len(x), np.int64)
    dist = np.empty((len(x), k))
    for i in range(iters):
        for j in range(k):
            acc = (cols[0] - centres[j, 0]) ** 2
            for c in range(1, len(cols)):
                acc += (cols[c] - centres[j, c]) ** 2
            dist[:, j] = acc
        new = dist.argmin(1)
        if i and (new == members).all():
            break
        members = new
        counts = np.bincount(members, minlength=k)
        for c, col in enumerate(cols):
            sums = np.bincount(members, weights=col, minlength=k)
            for j in range(k):
                if counts[j]:
                    centres[j, c] = sums[j] / counts[j]
    return members


_NV_SRAND = None


def seed_animeface(seed: int = 0) -> None:
    """Seed libnvxs's random generator (animeface's colour clustering starts from random centres)."""
    global _NV_SRAND
    if _NV_SRAND is None:
        _NV_SRAND = False
        import animeface

        libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(animeface.__file__)), "animeface.libs", "libnvxs*"))
        path = libs[0] if libs else ctypes.util.find_library("nvxs")
        try:
            _NV_SRAND = ctypes.CDLL(path).nv_srand if path else False
            if _NV_SRAND:
                _NV_SRAND.argtypes, _NV_SRAND.restype = [ctypes.c_ulong], None
        except (OSError, AttributeError) as e:
            log.debug("animeface: cannot seed libnvxs (%s)", e)
        if not _NV_SRAND:
            log.warning("animeface: libnvxs not found to seed; colour measurements may vary from run to run")
    if _NV_SRAND:
        _NV_SRAND(seed)
