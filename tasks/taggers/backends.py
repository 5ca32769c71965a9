"""The tag backends: i2v (Illustration2Vec), onnx (a wd-tagger-style model), color (CIELAB).

Each yields TagBatch: face ids, (B, 34) float32 probabilities in MGM_TAGS order (NaN where
the backend cannot say), optionally the top-k raw tags and the 4,096-d feature."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from models.device import cores
from models.device import resolve_device as resolve_device_of
from tasks.artifacts.tags import EYE_COLOR_SLICE, EYE_COLORS, HAIR_COLOR_SLICE, HAIR_COLORS, MGM_TAGS
from tasks.errors import DataError
from tasks.fileio import sha256_file
from tasks.params.tag import TagConfig
from tasks.taggers.choice import choose_backend
from tasks.taggers.colors import ColorNamer, measure_colors
from tasks.taggers.loader import crop_loader, default_workers, image_transform, resize_image

log = logging.getLogger(__name__)


COLUMNS = ("face_id", "shard", "hair_rgb", "eye_rgb")  # what the backends read from the reviewed faces


@dataclass
class TagBatch:
    face_ids: list[str]
    probs: np.ndarray  # (B, 34) float32, NaN = unknown
    raw_top: list[list[tuple[str, float]]] | None = None
    feature: np.ndarray | None = None  # (B, 4096) float32


def resolve_device(cfg: TagConfig) -> str:
    """"cpu" or "cuda" for tag.device (models.device's one policy); CUDA asked for but absent is
    a one-line error naming tag.device."""
    try:
        return resolve_device_of(cfg.device, key="tag.device").type
    except ValueError as e:
        if cfg.device == "cuda":
            raise DataError("tag.device: cuda requested but torch sees no GPU (set tag.device: auto or cpu)") from None
        raise DataError(str(e)) from None


def setup_threads(cfg: TagConfig, device: str) -> int:
    """torch CPU threads: tag.threads, or all this process's cores (null). A fixed count, not
    load-dependent, so a forward's last bits do not depend on what else the machine runs."""
    threads = cfg.threads or cores()
    if device == "cpu":
        torch.set_num_threads(threads)
    return threads


# --- helpers -------------------------------------------------------------------------------------

def _column_index(names: list[str], mapping, backend: str) -> list[int | None]:
    pos = {n: i for i, n in enumerate(names)}
    out = []
    for tag in MGM_TAGS:
        name = mapping.get(tag)
        idx = pos.get(name) if name is not None else None
        if idx is None:
            log.warning("tag: %s has no tag %r for %s: that column stays null", backend, name, tag)
        out.append(idx)
    return out


def _map(probs: np.ndarray, index: list[int | None]) -> np.ndarray:
    out = np.full((len(probs), len(MGM_TAGS)), np.nan, np.float32)
    for j, i in enumerate(index):
        if i is not None:
            out[:, j] = probs[:, i]
    return out


def _top_k(probs: np.ndarray, names: list[str], k: int) -> list[list[tuple[str, float]]] | None:
    if k <= 0:
        return None
    k = min(k, probs.shape[1])
    idx = np.argsort(-probs, axis=1)[:, :k]
    return [[(names[i], float(p[i])) for i in row] for row, p in zip(idx, probs)]


# --- backends ------------------------------------------------------------------------------------

class I2VBackend:
    name = "i2v"

    def __init__(self, cfg: TagConfig):
        from models.illust2vec import load_converted

        self.cfg = cfg
        self.device = resolve_device(cfg)
        self.devices = {self.device}  # where the forwards run (tasks.tag.run.value_params)
        setup_threads(cfg, self.device)
        self.model, self.meta = load_converted(cfg.i2v.weights)
        self.names = json.loads(Path(cfg.i2v.tag_list).read_text(encoding="utf-8"))
        self.index = _column_index(self.names, cfg.i2v.tags, "i2v")
        self.weights_sha256 = sha256_file(cfg.i2v.weights)
        self.feature_model = load_converted(cfg.i2v.feature_weights)[0] if cfg.feature else None
        mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = self.model.to(self.device, memory_format=mf)
        if self.feature_model is not None:
            self.feature_model = self.feature_model.to(self.device, memory_format=mf)

    def autocast(self):
        if self.device == "cuda" and self.cfg.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast():
            probs = self.model(x).float().cpu().numpy()
            feat = self.feature_model(x).float().cpu().numpy() if self.feature_model is not None else None
        return probs, feat

    def batches(self, faces: pa.Table, crops_dir: str) -> Iterator[TagBatch]:
        workers = default_workers(self.device, self.cfg.workers)
        loader = crop_loader(faces, crops_dir, image_transform(224), self.cfg.batch_size, workers, self.device == "cuda")
        for ids, x in loader:
            probs, feat = self.forward(x)
            yield TagBatch(ids, _map(probs, self.index), _top_k(probs, self.names, self.cfg.raw_top_k), feat)


class OnnxBackend:
    name = "onnx"

    def __init__(self, cfg: TagConfig):
        import onnxruntime as ort

        self.cfg = cfg
        self.device = resolve_device(cfg)
        self.devices = {self.device}
        opts = ort.SessionOptions()
        if self.device == "cpu":
            opts.intra_op_num_threads = setup_threads(cfg, self.device)
        providers = (["CUDAExecutionProvider"] if self.device == "cuda" else []) + ["CPUExecutionProvider"]
        providers = [p for p in providers if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(cfg.onnx.model, opts, providers=providers)
        inp = self.session.get_inputs()[0]
        self.input_name, shape = inp.name, list(inp.shape)
        self.nhwc = shape[-1] == 3
        side = shape[1] if self.nhwc else shape[-1]
        self.size = side if isinstance(side, int) and side > 0 else 448
        with open(cfg.onnx.tags_csv, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or "name" not in rows[0]:
            raise DataError(f"{cfg.onnx.tags_csv}: expected a CSV with a 'name' column (tag_id,name,category,count)")
        self.names = [r["name"] for r in rows]
        self.index = _column_index(self.names, cfg.onnx.tags, "onnx")
        self.weights_sha256 = sha256_file(cfg.onnx.model)

    def forward(self, x: torch.Tensor) -> np.ndarray:
        a = x.numpy().astype(np.float32)  # (B, 3, S, S) RGB 0-255
        if self.cfg.onnx.bgr:
            a = a[:, ::-1]
        a = np.ascontiguousarray(a.transpose(0, 2, 3, 1) if self.nhwc else a)
        out = self.session.run(None, {self.input_name: a})[0]
        if out.shape[1] != len(self.names):
            raise DataError(f"{self.cfg.onnx.model}: {out.shape[1]} outputs but {self.cfg.onnx.tags_csv} names {len(self.names)} tags")
        return out.astype(np.float32)

    def batches(self, faces: pa.Table, crops_dir: str) -> Iterator[TagBatch]:
        workers = default_workers(self.device, self.cfg.workers)
        transform = image_transform(self.size, pad_color=self.cfg.onnx.pad_color, resample="bicubic")
        for ids, x in crop_loader(faces, crops_dir, transform, self.cfg.batch_size, workers):
            probs = self.forward(x)
            yield TagBatch(ids, _map(probs, self.index), _top_k(probs, self.names, self.cfg.raw_top_k))


class ColorBackend:
    name = "color"
    weights_sha256 = None

    def __init__(self, cfg: TagConfig):
        self.cfg = cfg
        c = cfg.color
        self.hair = ColorNamer(c.hair_palette, HAIR_COLORS, c.temperature, c.lightness_weight)
        self.eye = ColorNamer(c.eye_palette, EYE_COLORS, c.temperature, c.lightness_weight)
        self.measured = self.unmeasured = 0
        self.devices: set[str] = set()  # no forward pass

    def probs(self, colors: list[tuple | None]) -> np.ndarray:
        out = np.full((len(colors), len(MGM_TAGS)), np.nan, np.float32)
        ok = [i for i, c in enumerate(colors) if c is not None and c[0] is not None]
        if ok:
            out[ok, HAIR_COLOR_SLICE] = self.hair.probabilities([colors[i][0] for i in ok])
            eyes = [i for i in ok if colors[i][1] is not None]
            if eyes:
                out[eyes, EYE_COLOR_SLICE] = self.eye.probabilities([colors[i][1] for i in eyes])
        return out

    def batches(self, faces: pa.Table, crops_dir: str) -> Iterator[TagBatch]:
        has_hair = pc.is_valid(faces.column("hair_rgb"))
        known, rest = faces.filter(has_hair), faces.filter(pc.invert(has_hair))
        bs = self.cfg.batch_size
        for i in range(0, known.num_rows, bs):  # detector colours: a batch of rows made Python at a time
            chunk = known.slice(i, bs)
            colors = list(zip(chunk.column("hair_rgb").to_pylist(), chunk.column("eye_rgb").to_pylist()))
            yield TagBatch(chunk.column("face_id").to_pylist(), self.probs(colors))
        if not rest.num_rows:
            return
        if not self.cfg.color.measure:
            self.unmeasured += rest.num_rows
            for i in range(0, rest.num_rows, bs):
                chunk = rest.column("face_id").slice(i, bs).to_pylist()
                yield TagBatch(chunk, self.probs([None] * len(chunk)))
            return
        workers = default_workers("cpu", self.cfg.workers, rest.num_rows, kind="measure")
        log.info("tag: %d faces have no detector colours: measuring them with animeface on the crops (%s)",
                 rest.num_rows, f"{workers} worker processes" if workers else "in-process")
        measure = partial(measure_colors, refine_delta_e=self.cfg.color.refine_delta_e)
        for fids, colors in crop_loader(rest, crops_dir, measure, bs, workers):
            self.measured += sum(c is not None for c in colors)
            self.unmeasured += sum(c is None for c in colors)
            yield TagBatch(fids, self.probs(colors))


BACKENDS = {"i2v": I2VBackend, "onnx": OnnxBackend, "color": ColorBackend}


# --- the tagger render uses on generated images --------------------------------------------------

class ArrayTagger:
    """A backend applied to uint8 (N, H, W, 3) RGB arrays (render's metrics, the paper-scale run)."""

    def __init__(self, backend, cfg: TagConfig):
        self.backend, self.cfg, self.name = backend, cfg, backend.name
        self._feature = None

    def _tensor(self, images: np.ndarray, size: int, pad_color: int | None = None, resample: str = "bilinear"):
        """The arrays as the stage's loader would give the crops (same resize), without a PNG round trip."""
        from PIL import Image

        return torch.stack([resize_image(Image.fromarray(np.asarray(a, np.uint8)), size, pad_color, resample)
                            for a in images])

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        b = self.backend
        if isinstance(b, ColorBackend):
            from PIL import Image

            return b.probs([measure_colors(Image.fromarray(np.asarray(a, np.uint8)), self.cfg.color.refine_delta_e) for a in images])
        if isinstance(b, OnnxBackend):
            return _map(b.forward(self._tensor(images, b.size, self.cfg.onnx.pad_color, "bicubic")), b.index)
        return _map(b.forward(self._tensor(images, 224))[0], b.index)

    def features(self, images: np.ndarray) -> np.ndarray | None:
        if not isinstance(self.backend, I2VBackend) or not Path(self.cfg.i2v.feature_weights).is_file():
            return None
        if self._feature is None:
            from models.illust2vec import load_converted

            self._feature = load_converted(self.cfg.i2v.feature_weights)[0].to(self.backend.device)
        with torch.inference_mode(), self.backend.autocast():
            return self._feature(self._tensor(images, 224).to(self.backend.device)).float().cpu().numpy()


def load_tagger(cfg: TagConfig) -> ArrayTagger:
    """The backend `cfg` chooses (same choice, same errors as the tag stage) for arrays of generated
    images; the tag stage itself warns about an auto fallback to colours, this only logs it."""
    choice = choose_backend(cfg)
    log.info("tagger for arrays: %s (%s)", choice.backend, choice.reason)
    return ArrayTagger(BACKENDS[choice.backend](cfg), cfg)
