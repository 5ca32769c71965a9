"""onnxruntime (Python) against PyTorch on the same seeds and tags, and the seed -> pixels
reference the web test compares the browser's canvas with."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tasks.errors import MoeflowError
from tasks.export.noise import seed_to_z

log = logging.getLogger(__name__)


class ParityError(MoeflowError):
    """The exported model does not compute what the PyTorch generator computes."""


def parity_tags(i: int, n_tags: int, groups: tuple[tuple[int, int], ...]) -> list[float]:
    """A deterministic, valid tag vector for sample i: one tag of each one-hot group (cycling),
    the other tags from the bits of i."""
    tags = [0.0] * n_tags
    grouped = set()
    for start, stop in groups:
        tags[start + i % (stop - start)] = 1.0
        grouped.update(range(start, stop))
    free = [j for j in range(n_tags) if j not in grouped]
    for k, j in enumerate(free):
        tags[j] = float((i * 2654435761 >> k) & 1)
    return tags


def inputs_for(seeds: list[int], tags: list[list[float]], z_dim: int) -> tuple[np.ndarray, np.ndarray]:
    z = np.array([seed_to_z(s, z_dim) for s in seeds], dtype=np.float32)
    return z, np.asarray(tags, dtype=np.float32).reshape(len(seeds), -1)


def session(model: str | Path | bytes, threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def run_onnx(sess, z: np.ndarray, tags: np.ndarray) -> np.ndarray:
    return sess.run(["image"], {"z": z, "tags": tags})[0]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8, exactly as the page does it
    (floor((x + 1) * 127.5 + 0.5), clamped, in float64)."""
    x = np.floor((image.astype(np.float64) + 1.0) * 127.5 + 0.5)
    return np.clip(x, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def compare(torch_model, onnx_model: str | Path | bytes, seeds: list[int], tags: list[list[float]],
            z_dim: int) -> dict:
    """max / mean |difference| between PyTorch and onnxruntime on the same batch, plus the
    largest uint8 pixel difference after the page's conversion."""
    import torch

    z, t = inputs_for(seeds, tags, z_dim)
    with torch.no_grad():
        ref = torch_model.eval()(torch.from_numpy(z), torch.from_numpy(t)).numpy()
    got = run_onnx(session(onnx_model), z, t)
    if got.shape != ref.shape:
        raise ParityError(f"onnxruntime output shape {got.shape} != PyTorch {ref.shape}")
    d = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    px = np.abs(to_uint8(got).astype(np.int16) - to_uint8(ref).astype(np.int16))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "max_pixel": int(px.max()),
            "samples": len(seeds)}
