"""The two face detectors behind one interface: `detect(rgb, pil) -> list[Detection]`.

- lbpcascade: OpenCV's CascadeClassifier with nagadomi's lbpcascade_animeface.xml, on the
  equalised grey image (as in the upstream example); score = the cascade's level weight.
- animeface: the nvxs detector of the `animeface` package; score = its likelihood, plus
  the hair, eye and skin colours it measures."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

import cv2
import numpy as np

from tasks.errors import ConfigError

RGBTuple = tuple[int, int, int]
KNOWN_BAD_PILLOW_MAJOR = 13  # animeface 2.0.3 returns no faces at all with Pillow 13


@dataclass(frozen=True)
class Detection:
    x: int
    y: int
    w: int
    h: int
    score: Optional[float] = None
    hair: Optional[RGBTuple] = None
    eye: Optional[RGBTuple] = None
    skin: Optional[RGBTuple] = None


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray, pil_image) -> list[Detection]: ...


def read_cascade(path: str | Path) -> tuple[bytes, str]:
    """The cascade file's bytes and sha256; a clear ConfigError if missing or not a cascade."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"detect.cascade: {path} does not exist (run the fetch stage: `dvc repro fetch` or "
            "`python -m tasks.fetch`; or point detect.cascade at a copy of nagadomi's lbpcascade_animeface.xml)") from None
    except OSError as e:
        raise ConfigError(f"detect.cascade: cannot read {path}: {e.strerror or e}") from None
    load_cascade(data, str(path))
    return data, hashlib.sha256(data).hexdigest()


def load_cascade(data: bytes, where: str = "cascade") -> cv2.CascadeClassifier:
    """A CascadeClassifier from the XML bytes (no file needed, so Dask workers get it in memory)."""
    try:
        fs = cv2.FileStorage(data.decode("utf-8"), cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
        casc = cv2.CascadeClassifier()
        ok = casc.read(fs.getFirstTopLevelNode())
    except (cv2.error, UnicodeDecodeError, SystemError):  # OpenCV's parser errors surface oddly
        ok = False
    if not ok or casc.empty():
        raise ConfigError(f"detect.cascade: {where} is not a readable OpenCV cascade XML file")
    return casc


class LbpCascade:
    name = "lbpcascade"

    def __init__(self, cascade_xml: bytes, scale_factor: float, min_neighbors: int, min_size: int):
        self._casc = load_cascade(cascade_xml)
        self._args = dict(scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size))

    def detect(self, rgb: np.ndarray, pil_image=None) -> list[Detection]:
        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        boxes, _levels, weights = self._casc.detectMultiScale3(grey, outputRejectLevels=True, **self._args)
        return [Detection(int(x), int(y), int(w), int(h), float(s)) for (x, y, w, h), s in zip(boxes, weights)]


def _rgb(color) -> RGBTuple:
    return int(color.r), int(color.g), int(color.b)


def check_animeface() -> None:
    """Refuse a Pillow that animeface silently returns nothing with (see tests/detect/test_detect_animeface.py)."""
    import PIL

    if int(PIL.__version__.split(".")[0]) >= KNOWN_BAD_PILLOW_MAJOR:
        raise ConfigError(
            f"detect.detector: animeface 2.0.3 finds no faces with Pillow {PIL.__version__}; "
            "install the pinned Pillow==10.4.0 (requirements.lock)")
    try:
        import animeface  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"detect.detector: animeface is not installed ({e})") from None


class AnimeFace:
    name = "animeface"

    def __init__(self):
        check_animeface()
        import animeface

        self._detect = animeface.detect

    def detect(self, rgb: np.ndarray, pil_image) -> list[Detection]:
        out = []
        for f in self._detect(pil_image):
            box = f.face.pos
            le, re_ = _rgb(f.left_eye.color), _rgb(f.right_eye.color)
            eye = tuple(int(round((a + b) / 2)) for a, b in zip(le, re_))
            out.append(Detection(int(box.x), int(box.y), int(box.width), int(box.height), float(f.likelihood),
                                 hair=_rgb(f.hair.color), eye=eye, skin=_rgb(f.skin.color)))
        return out
