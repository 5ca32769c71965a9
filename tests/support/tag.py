"""Helpers for the tag tests: synthetic caffemodels, a numpy reference forward, faces datasets."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from models.caffemodel import Blob, Layer, Net
from models.illust2vec import MEAN_BGR

# Canonical hair colours of the labelled characters (Danbooru's tags for the character design).
# Shana's hair is black outside her Flame Haze form, red in it: both are her canon.
CANONICAL_HAIR = {
    "akiyama_mio": {"black"}, "fate_testarossa": {"blonde"}, "hakurei_reimu": {"brown"},
    "hatsune_miku": {"aqua"}, "izumi_konata": {"blue"}, "kinomoto_sakura": {"brown"},
    "lelouch_lamperouge": {"black"}, "shana": {"red", "black"}, "suzumiya_haruhi": {"brown"},
    "takamachi_nanoha": {"brown"},
}


def _conv(rng, name, bottom, cin, cout, k=3, pad=1, stride=1, relu=True):
    w = rng.normal(0, (2.0 / (cin * k * k)) ** 0.5, (cout, cin, k, k)).astype(np.float32)
    b = rng.normal(0, 0.1, cout).astype(np.float32)
    layers = [Layer(name, "Convolution", [bottom], [name], [Blob(w.shape, w.ravel()), Blob((cout,), b)],
                    {"convolution": {"num_output": cout, "kernel": (k, k), "stride": (stride, stride), "pad": (pad, pad)}})]
    if relu:
        layers.append(Layer(f"relu_{name}", "ReLU", [name], [name]))
    return layers


def synthetic_net(seed: int = 0, num_tags: int = 11, feature: bool = False, feature_dim: int = 16) -> Net:
    """A small i2v-shaped net on 32×32 input: data → 3 convs with pools → conv6_4 (→ encode1)."""
    rng = np.random.default_rng(seed)
    layers = [Layer("data", "Data", [], ["data", "label"], phases=[0])]  # train-only data layer, skipped
    layers += _conv(rng, "conv1_1", "data", 3, 8)
    layers.append(Layer("pool1", "Pooling", ["conv1_1"], ["pool1"], params={"pooling": {"method": "MAX", "kernel": (3, 3), "stride": (2, 2)}}))
    layers += _conv(rng, "conv2_1", "pool1", 8, 12)
    layers.append(Layer("drop2", "Dropout", ["conv2_1"], ["conv2_1"]))
    layers.append(Layer("pool2", "Pooling", ["conv2_1"], ["pool2"], params={"pooling": {"method": "AVE", "kernel": (2, 2), "stride": (2, 2)}}))
    layers += _conv(rng, "conv6_4", "pool2", 12, num_tags, relu=False)
    layers.append(Layer("pool6", "Pooling", ["conv6_4"], ["pool6"], params={"pooling": {"method": "AVE", "global": True}}))
    layers.append(Layer("prob", "Sigmoid", ["pool6"], ["prob"]))
    if feature:
        k = num_tags  # on the global average of conv6_4, so any input size works
        w = rng.normal(0, k ** -0.5, (feature_dim, k)).astype(np.float32)
        b = rng.normal(0, 0.1, feature_dim).astype(np.float32)
        layers.append(Layer("encode1", "InnerProduct", ["pool6"], ["encode1"],
                            [Blob((feature_dim, k), w.ravel()), Blob((feature_dim,), b)], {"inner_product": {"num_output": feature_dim}}))
        layers.append(Layer("encode1neuron", "Sigmoid", ["encode1"], ["encode1neuron"]))
    layers.append(Layer("loss", "SigmoidCrossEntropyLoss", ["conv6_4", "label"], ["loss"], phases=[0]))
    return Net(name="synthetic_i2v", layers=layers)


# --- numpy reference, straight from the blobs -----------------------------------------------------

def _np_conv(x, w, b, pad, stride=1):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    cols = np.empty((n, c, k, k, oh, ow), np.float64)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
    return np.einsum("nckhij,ockh->noij", cols, w.astype(np.float64)) + b[None, :, None, None]


def _np_pool(x, k, s, method):
    n, c, h, w = x.shape
    oh, ow = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1  # Caffe: ceil
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, i * s:min(i * s + k, h), j * s:min(j * s + k, w)]
            out[:, :, i, j] = win.max((2, 3)) if method == "MAX" else win.sum((2, 3)) / (k * k)
    return out


def reference_forward(net: Net, rgb: np.ndarray, output: str = "tag") -> np.ndarray:
    """What the converted network must compute, from the blobs with numpy (float64)."""
    blobs = {layer.name: layer.blobs for layer in net.layers}

    def w(name):
        return blobs[name][0].data.reshape(blobs[name][0].shape).astype(np.float64), blobs[name][1].data.astype(np.float64)

    x = rgb.astype(np.float64)[:, ::-1] - np.array(MEAN_BGR)[None, :, None, None]
    x = np.maximum(_np_conv(x, *w("conv1_1"), pad=1), 0)
    x = _np_pool(x, 3, 2, "MAX")
    x = np.maximum(_np_conv(x, *w("conv2_1"), pad=1), 0)
    x = _np_pool(x, 2, 2, "AVE")
    x = _np_conv(x, *w("conv6_4"), pad=1)
    if output == "tag":
        return 1 / (1 + np.exp(-x.mean((2, 3))))
    wt, b = blobs["encode1"][0].data.reshape(blobs["encode1"][0].shape), blobs["encode1"][1].data
    return x.mean((2, 3)) @ wt.T.astype(np.float64) + b


# --- faces datasets from the shared labelled crops --------------------------------------------------

def labelled_faces(shared: Path) -> list[tuple[str, str]]:
    """(path, character) for the character-labelled crops."""
    with open(shared / "data" / "faces_labels.csv", newline="", encoding="utf-8") as f:
        return [(str(shared / "data" / r["file"]), r["danbooru_character_tag"]) for r in csv.DictReader(f)]


def png_bytes(path: str, size: int | None = None) -> bytes:
    from PIL import Image

    im = Image.open(path).convert("RGB")
    if size:
        im = im.resize((size, size), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def write_faces_dataset(root: Path, items: list[tuple[str, bytes]], *, drop: dict[str, str] | None = None,
                        colors: dict[str, tuple] | None = None, detector: str = "lbpcascade", shard_rows: int = 64):
    """faces.parquet + crop shards under root; items are (face_id, png). Returns (faces path, crops dir)."""
    from tasks.artifacts.faces import ShardWriter, write_faces

    crops = root / "crops"
    writer = ShardWriter(crops, "t", rows_per_shard=shard_rows)
    rows = []
    for fid, png in items:
        shard = writer.add(fid, png)
        hair, eye = (colors or {}).get(fid, (None, None))
        rows.append({"face_id": fid, "image_id": f"img-{fid}", "detector": detector, "score": 1.0, "box_x": 0, "box_y": 0,
                     "box_w": 64, "box_h": 64, "crop_x0": 0, "crop_y0": 0, "crop_x1": 96, "crop_y1": 96, "size": 96,
                     "monochrome": False, "duplicate_of": None, "drop_reason": (drop or {}).get(fid),
                     "hair_rgb": list(hair) if hair else None, "eye_rgb": list(eye) if eye else None, "skin_rgb": None,
                     "shard": shard, "params_key": "test"})
    writer.flush()
    faces = root / "faces.parquet"
    write_faces(faces, rows)
    return faces, crops
