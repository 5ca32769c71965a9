"""The per-image work, the same function in-process, in a process pool and on Dask:
load (EXIF orientation, transparency on white, bad input caught), detect, crop, filter."""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import BinaryIO, Optional

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tasks.artifacts.faces import crop_box_problem, face_id
from tasks.artifacts.images import Changed, is_reference, read_span
from tasks.detect import geometry
from tasks.detect.filters import chroma, phash
from tasks.detectors import AnimeFace, Detection, LbpCascade, read_cascade
from tasks.errors import Rejected
from tasks.params.detect import DetectConfig

ALGO_VERSION = 2  # bump when the per-image work changes its output: every image is redone (2: 16-bit grey scaled)
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 6]
# Why an image is unusable. A final reason is a property of the file under the params key, so the
# image is not tried again; a transient one (the file was not there, an unexpected exception, a
# worker process that died on it) is recorded for this run and retried by the next one.
FINAL_REASONS = frozenset({"unreadable", "truncated", "too_large", "corrupt", "unsupported"})
TRANSIENT_REASONS = frozenset({"missing", "error", "worker_crashed"})


@dataclass(frozen=True)
class WorkSettings:
    """Everything a worker needs, picklable; `key` names the output it produces."""

    detector: str
    cascade_xml: bytes
    cascade_sha256: str
    scale_factor: float
    min_neighbors: int
    min_size: int
    min_likelihood: float
    box_scale: float
    border: str
    pad_fill: str
    min_face: int
    size: int
    max_pixels: int
    monochrome_chroma: float
    key: str = ""

    @classmethod
    def from_config(cls, cfg: DetectConfig) -> "WorkSettings":
        xml, sha = read_cascade(cfg.cascade) if cfg.detector == "lbpcascade" else (b"", "")
        s = cls(cfg.detector, xml, sha, cfg.scale_factor, cfg.min_neighbors, cfg.min_size, cfg.min_likelihood,
                cfg.box_scale, cfg.border, cfg.pad_fill, cfg.min_face, cfg.size, cfg.max_pixels, cfg.monochrome_chroma)
        return cls(**{**asdict(s), "key": s.params_key()})

    def params_key(self) -> str:
        """Hash of what decides an image's faces: detector and its params (the cascade by
        content), crop and filter params, and ALGO_VERSION."""
        d = asdict(self)
        d.pop("cascade_xml"), d.pop("key")
        if self.detector == "lbpcascade":
            d.pop("min_likelihood")
        else:
            for k in ("cascade_sha256", "scale_factor", "min_neighbors", "min_size"):
                d.pop(k)
        d["algo"] = ALGO_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RecordedFace:
    """A face recorded elsewhere (a release): cropped as it is, never detected again."""

    detector: str
    box: tuple[int, int, int, int]  # detected x, y, w, h
    crop_box: tuple[int, int, int, int]  # x0, y0, x1, y1
    score: Optional[float] = None


@dataclass(frozen=True)
class ImageTask:
    image_id: str
    path: str  # the file holding the image (a pack of the store): absolute, or relative to the worker's cwd
    offset: int  # the image's bytes in it: `length` bytes from `offset`
    length: int
    name: str = ""  # the manifest's pack (relative to the images dir): what error details may show
    recorded: tuple[RecordedFace, ...] = ()  # crop these instead of running the detector (the release source)


def is_final(status: str, reason: Optional[str]) -> bool:
    """Whether an image's outcome stands for its params key (ok, or a final reason)."""
    return status == "ok" or reason in FINAL_REASONS


@dataclass
class FaceResult:
    face_id: str
    box: tuple[int, int, int, int]  # detected x, y, w, h
    crop_box: tuple[int, int, int, int]  # x0, y0, x1, y1
    score: Optional[float]
    drop_reason: Optional[str]  # too_small, off_image, low_likelihood, box_too_large (decided per image)
    monochrome: bool = False
    chroma: Optional[float] = None
    phash: Optional[int] = None
    png: Optional[bytes] = None
    hair: Optional[tuple[int, int, int]] = None
    eye: Optional[tuple[int, int, int]] = None
    skin: Optional[tuple[int, int, int]] = None
    detector: Optional[str] = None  # a recorded face's own detector (else the stage's)


@dataclass
class ImageResult:
    image_id: str
    status: str  # "ok" or "bad"
    reason: Optional[str] = None  # bad: FINAL_REASONS or TRANSIENT_REASONS
    detail: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    seconds: float = 0.0  # for the log only: never written to an artifact
    faces: list[FaceResult] = field(default_factory=list)


# Greyscale modes wider than 8 bits: a 16-bit PNG opens as I;16 (I in older Pillows). Pillow's
# convert("RGB") clips them (every pixel 0 or 255); grey_to_8bit scales them instead.
WIDE_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
WIDE_MAX = 65535  # the white of a 16-bit sample (mode I here is a 16-bit PNG's or TIFF's grey)


def grey_to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit greyscale image as 8-bit L (v * 255 / 65535, rounded), its transparent grey (a tRNS
    chunk: one 16-bit value) as alpha (LA)."""
    wide = np.asarray(im).astype(np.int64)
    wide = np.clip(wide, 0, WIDE_MAX)
    grey = Image.fromarray(((wide * 255 + WIDE_MAX // 2) // WIDE_MAX).astype(np.uint8), "L")
    key = im.info.get("transparency")
    if isinstance(key, int) and not isinstance(key, bool):
        alpha = Image.fromarray(np.where(wide == key, 0, 255).astype(np.uint8), "L")
        return Image.merge("LA", (grey, alpha))
    return grey


def load_image(path: str | BinaryIO, max_pixels: int) -> Image.Image:
    """Decode to RGB: EXIF orientation applied, 16-bit greyscale scaled to 8 bits (16-bit RGB(A)
    Pillow already reduces), transparency composited on white. Raises Rejected with a reason for
    anything unusable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # our own max_pixels check replaces Pillow's bomb warning
            im = Image.open(path)
            w, h = im.size
            if w * h > max_pixels:
                raise Rejected("too_large", f"{w}x{h} > {max_pixels} pixels")
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in WIDE_GREY:
                im = grey_to_8bit(im)
            elif im.mode == "F":
                raise Rejected("unsupported", "floating-point pixels (mode F): no known white level")
            if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
                rgba = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
            elif im.mode != "RGB":
                im = im.convert("RGB")
    except Rejected:
        raise
    except FileNotFoundError as e:
        raise Rejected("missing", str(e)) from None
    except UnidentifiedImageError:
        raise Rejected("unreadable", "not an image Pillow can identify") from None
    except Image.DecompressionBombError as e:
        raise Rejected("too_large", str(e)) from None
    except (OSError, SyntaxError, EOFError, ValueError) as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise Rejected("truncated", msg) from None
        if "mode" in msg.lower() or "conversion" in msg.lower():
            raise Rejected("unsupported", msg) from None
        raise Rejected("corrupt", msg or type(e).__name__) from None
    return im


_DETECTORS: dict[str, object] = {}


def detector_for(settings: WorkSettings):
    """One detector per process and settings (the cascade is parsed once)."""
    det = _DETECTORS.get(settings.key)
    if det is None:
        _DETECTORS.clear()
        if settings.detector == "lbpcascade":
            det = LbpCascade(settings.cascade_xml, settings.scale_factor, settings.min_neighbors, settings.min_size)
        else:
            det = AnimeFace()
        _DETECTORS[settings.key] = det
    return det


def init_worker(settings: WorkSettings) -> None:
    """Process-pool initializer: one OpenCV thread per process (the processes are the parallelism)."""
    cv2.setNumThreads(1)
    detector_for(settings)


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), PNG_PARAMS)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def crop_face(rgb: np.ndarray, image_id: str, det: Detection, s: WorkSettings) -> FaceResult:
    h, w = rgb.shape[:2]
    big = geometry.enlarge(det.x, det.y, det.w, det.h, s.box_scale)
    placed = geometry.place(big, w, h, s.border)  # type: ignore[arg-type]
    box = placed or big
    face = FaceResult(face_id(image_id, s.detector, box), (det.x, det.y, det.w, det.h), box, det.score, None,
                      hair=det.hair, eye=det.eye, skin=det.skin)
    if min(det.w, det.h) < s.min_face:
        face.drop_reason = "too_small"
    elif s.detector == "animeface" and det.score is not None and det.score < s.min_likelihood:
        face.drop_reason = "low_likelihood"
    elif placed is None:
        face.drop_reason = "off_image"
    if face.drop_reason is not None:
        return face
    return _finish(face, rgb, s)


def _finish(face: FaceResult, rgb: np.ndarray, s: WorkSettings) -> FaceResult:
    crop = geometry.resize(geometry.cut(rgb, face.crop_box, s.pad_fill), s.size)  # type: ignore[arg-type]
    face.chroma = chroma(crop)
    face.monochrome = face.chroma < s.monochrome_chroma
    face.phash = phash(crop)
    face.png = encode_png(crop)
    return face


def crop_recorded(rgb: np.ndarray, image_id: str, rec: RecordedFace, s: WorkSettings) -> FaceResult:
    """A recorded face: its own crop box and detector, so the same face_id as where it was recorded."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = rec.crop_box
    face = FaceResult(face_id(image_id, rec.detector, rec.crop_box), rec.box, rec.crop_box, rec.score, None,
                      detector=rec.detector)
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        face.drop_reason = "off_image"  # not this image's box: nothing of it to cut
        return face
    if crop_box_problem(rec.crop_box, w, h):  # far larger than this image: cutting it would allocate side² px
        face.drop_reason = "box_too_large"
        return face
    return _finish(face, rgb, s)


def process_image(task: ImageTask, settings: WorkSettings) -> ImageResult:
    """Detect and crop the faces of one image. Never raises for bad input: the result
    says why the image was unusable. (A bad cascade or detector setup does raise.)"""
    det = detector_for(settings)
    t0 = time.perf_counter()
    res = ImageResult(task.image_id, "ok")
    try:
        try:
            data = read_span(task.path, task.offset, task.length,
                             task.image_id if is_reference(task.name) else None)  # the user's file: checked
        except (FileNotFoundError, Changed) as e:
            raise Rejected("missing", str(e)) from None
        pil = load_image(io.BytesIO(data), settings.max_pixels)
        rgb = np.asarray(pil)
        res.width, res.height = pil.size
        seen: set[str] = set()
        found = ((crop_recorded(rgb, task.image_id, r, settings) for r in task.recorded) if task.recorded
                 else (crop_face(rgb, task.image_id, d, settings) for d in det.detect(rgb, pil)))
        for face in found:
            if face.face_id not in seen:  # two boxes shifted onto the same crop: keep the first
                seen.add(face.face_id)
                res.faces.append(face)
    except Rejected as e:
        res.status, res.reason, res.detail, res.faces = "bad", e.reason, _detail(e.detail, task), []
    except MemoryError as e:  # this machine's limit, not the file's: transient
        res.status, res.reason, res.detail, res.faces = "bad", "error", _detail(f"out of memory: {e}", task), []
    except Exception as e:  # noqa: BLE001 - one odd image must never stop the stage
        res.status, res.reason, res.detail, res.faces = "bad", "error", _detail(f"{type(e).__name__}: {e}", task), []
    res.seconds = time.perf_counter() - t0
    return res


def _detail(message: str, task: ImageTask) -> str:
    """An error message as an artifact may hold it: the manifest's relative path instead of
    this machine's absolute one, at most 500 characters."""
    return message.replace(task.path, task.name or "<image>")[:500]
