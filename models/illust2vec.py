"""Illustration2Vec (Saito & Matsui 2015) in PyTorch, built from a Caffe layer list.

The network is not hard-coded: `layer_specs(net)` turns the layers of the published
`.caffemodel` (see models/caffemodel.py) into JSON-able specs, `CaffeNet` builds modules from
them and runs them in file order with Chainer's `CaffeFunction` semantics (in-place layers
overwrite their blob; the requested blob's final value is returned), and `state_dict_from(net)`
maps the blobs onto the modules. `I2V_TAG_ARCH` is the architecture of the published
`illust2vec_tag.prototxt`, for building the network without weights (benchmarks, shape tests).

`Illust2Vec` wraps a CaffeNet with the reference preprocessing (RGB 0-255 → BGR, minus the
mean [164.76139251, 167.47864617, 181.13838569]) and head: the tag model averages `conv6_4`
over its 7×7 map and applies a sigmoid (1,539 probabilities); the feature model returns
`encode1` (4,096-d)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.caffemodel import Net

log = logging.getLogger(__name__)

MEAN_BGR = (164.76139251, 167.47864617, 181.13838569)
INPUT_SIZE = 224
TAG_OUTPUT = "conv6_4"
FEATURE_OUTPUT = "encode1"
SKIP_TYPES = {"Data", "Input", "ImageData", "MemoryData", "HDF5Data", "DummyData", "WindowData", "Accuracy",
              "SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "EuclideanLoss", "Silence", "Split"}
SUPPORTED = {"Convolution", "InnerProduct", "ReLU", "Pooling", "Dropout", "Sigmoid", "Softmax", "Flatten", "LRN", "TanH"}


def layer_specs(net: Net) -> list[dict]:
    """JSON-able specs of the layers a test-phase forward pass uses (blob shapes included)."""
    specs = []
    for layer in net.layers:
        if layer.type in SKIP_TYPES or (layer.phases and 1 not in layer.phases):
            continue
        spec = {"name": layer.name, "type": layer.type, "bottom": list(layer.bottom), "top": list(layer.top)}
        p = layer.params
        if layer.type == "Convolution":
            c = dict(p.get("convolution", {}))
            w = layer.blobs[0].shape if layer.blobs else None
            if w is None:
                raise ValueError(f"layer {layer.name}: convolution without weights")
            w = w[-4:]
            c["num_output"] = int(w[0])
            c["in_channels"] = int(w[1]) * int(c.get("group", 1))
            c["kernel"] = [int(w[2]), int(w[3])]
            c["bias_term"] = len(layer.blobs) > 1
            spec["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in c.items()}
        elif layer.type == "InnerProduct":
            q = dict(p.get("inner_product", {}))
            w = [d for d in layer.blobs[0].shape if d != 1] if layer.blobs else None
            if not w or len(w) > 2:
                raise ValueError(f"layer {layer.name}: inner product weights of shape {layer.blobs[0].shape if layer.blobs else None}")
            n, k = (w[1], w[0]) if q.get("transpose") else (w[0], w[-1])
            q.update(num_output=int(n), in_features=int(k), bias_term=len(layer.blobs) > 1)
            spec["params"] = q
        elif layer.type == "Pooling":
            spec["params"] = {k: list(v) if isinstance(v, tuple) else v for k, v in p.get("pooling", {}).items()}
        elif layer.type == "ReLU":
            spec["params"] = p.get("relu", {"negative_slope": 0.0})
        elif layer.type == "LRN":
            spec["params"] = p.get("lrn", {})
        specs.append(spec)
    return specs


def _module_name(layer_name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", layer_name) or "layer"


class _Pool(nn.Module):
    """Caffe pooling: ceil-mode output size, average over the window clipped to the padded input."""

    def __init__(self, method: str, kernel, stride, pad, global_pool: bool):
        super().__init__()
        if method not in ("MAX", "AVE"):
            raise ValueError(f"pooling method {method} is not supported")
        self.method, self.kernel, self.stride, self.pad, self.global_pool = method, tuple(kernel), tuple(stride), tuple(pad), global_pool

    def forward(self, x):
        if self.global_pool:
            return x.amax((2, 3), keepdim=True) if self.method == "MAX" else x.mean((2, 3), keepdim=True)
        if self.method == "MAX":
            return F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True)
        return F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=True, count_include_pad=True)


def _build(spec: dict) -> nn.Module:
    t, p = spec["type"], spec.get("params", {})
    if t == "Convolution":
        return nn.Conv2d(p["in_channels"], p["num_output"], tuple(p["kernel"]), tuple(p.get("stride", (1, 1))),
                         tuple(p.get("pad", (0, 0))), tuple(p.get("dilation", (1, 1))), p.get("group", 1),
                         bias=p.get("bias_term", True))
    if t == "InnerProduct":
        return nn.Linear(p["in_features"], p["num_output"], bias=p.get("bias_term", True))
    if t == "ReLU":
        slope = p.get("negative_slope", 0.0)
        return nn.LeakyReLU(slope) if slope else nn.ReLU()
    if t == "Pooling":
        return _Pool(p.get("method", "MAX"), p.get("kernel", (1, 1)), p.get("stride", (1, 1)), p.get("pad", (0, 0)),
                     p.get("global", False))
    if t == "Dropout":
        return nn.Identity()  # test phase: Caffe scales at train time
    if t == "Sigmoid":
        return nn.Sigmoid()
    if t == "TanH":
        return nn.Tanh()
    if t == "Softmax":
        return nn.Softmax(dim=1)
    if t == "Flatten":
        return nn.Flatten(1)
    if t == "LRN":
        return nn.LocalResponseNorm(p.get("local_size", 5), p.get("alpha", 1.0), p.get("beta", 0.75), p.get("k", 1.0))
    raise ValueError(f"layer {spec['name']}: Caffe layer type {t!r} is not supported (supported: {', '.join(sorted(SUPPORTED))})")


def needed_layers(specs: list[dict], output: str) -> list[dict]:
    """The layers, in file order, that the final value of blob `output` depends on."""
    needed, keep = {output}, []
    for spec in reversed(specs):
        tops = set(spec["top"])
        if tops & needed:
            keep.append(spec)
            needed -= tops - set(spec["bottom"])
            needed |= set(spec["bottom"])
    if not keep:
        raise ValueError(f"no layer produces blob {output!r}")
    return keep[::-1]


class CaffeNet(nn.Module):
    """The layers that compute blob `output`, run in file order on named blobs."""

    def __init__(self, specs: list[dict], output: str, input_blob: str | None = None):
        super().__init__()
        self.specs = needed_layers(specs, output)
        self.output = output
        produced = {t for s in self.specs for t in s["top"]}
        inputs = [b for s in self.specs for b in s["bottom"] if b not in produced]
        self.input_blob = input_blob or (inputs[0] if inputs else "data")
        self.layers = nn.ModuleDict()
        self._order: list[tuple[str, str, str]] = []  # module key, bottom, top
        for s in self.specs:
            if len(s["bottom"]) != 1 or len(s["top"]) != 1:
                raise ValueError(f"layer {s['name']}: only single-input single-output layers are supported")
            key = _module_name(s["name"])
            while key in self.layers:
                key += "_"
            self.layers[key] = _build(s)
            self._order.append((key, s["bottom"][0], s["top"][0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blobs = {self.input_blob: x}
        for key, bottom, top in self._order:
            y = blobs[bottom]
            m = self.layers[key]
            if isinstance(m, nn.Linear) and y.dim() > 2:
                y = y.flatten(1)
            blobs[top] = m(y)
        return blobs[self.output]


def state_dict_from(net: Net, model: CaffeNet) -> dict[str, torch.Tensor]:
    """Map the caffemodel's blobs onto CaffeNet parameter names."""
    by_name = {layer.name: layer for layer in net.layers}
    state = {}
    for key, spec in zip(model.layers.keys(), model.specs):
        m = model.layers[key]
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        blobs = by_name[spec["name"]].blobs
        w = blobs[0].data.reshape(m.weight.shape if not spec["params"].get("transpose") else m.weight.shape[::-1])
        if spec["params"].get("transpose"):
            w = w.T
        state[f"layers.{key}.weight"] = torch.tensor(np.ascontiguousarray(w, dtype=np.float32))
        if m.bias is not None:
            state[f"layers.{key}.bias"] = torch.tensor(blobs[1].data.reshape(-1).astype(np.float32))
    return state


class Illust2Vec(nn.Module):
    """Preprocessing + network + head. Input: RGB, NCHW, values 0-255 (uint8 or float)."""

    def __init__(self, specs: list[dict], kind: str = "tag", output: str | None = None,
                 mean_bgr=MEAN_BGR):
        super().__init__()
        if kind not in ("tag", "feature"):
            raise ValueError(f"kind must be tag or feature, not {kind!r}")
        self.kind = kind
        self.net = CaffeNet(specs, output or (TAG_OUTPUT if kind == "tag" else FEATURE_OUTPUT))
        self.register_buffer("mean", torch.tensor(mean_bgr, dtype=torch.float32).view(1, 3, 1, 1))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.mean.dtype if not torch.is_autocast_enabled() else torch.float32)
        return x.flip(1) - self.mean  # RGB → BGR, then the per-channel mean (BGR order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(self.preprocess(x))
        if self.kind == "tag":
            return torch.sigmoid(y.float().mean((2, 3)) if y.dim() == 4 else y.float())
        return y.float().flatten(1)


def _conv(name, bottom, cin, cout):
    return [{"name": name, "type": "Convolution", "bottom": [bottom], "top": [name],
             "params": {"num_output": cout, "in_channels": cin, "kernel": [3, 3], "stride": [1, 1], "pad": [1, 1],
                        "dilation": [1, 1], "group": 1, "bias_term": True}},
            {"name": f"relu{name[4:]}", "type": "ReLU", "bottom": [name], "top": [name], "params": {"negative_slope": 0.0}}]


def _pool(name, bottom, method="MAX", k=2, s=2):
    return [{"name": name, "type": "Pooling", "bottom": [bottom], "top": [name],
             "params": {"method": method, "kernel": [k, k], "stride": [s, s], "pad": [0, 0], "global": False}}]


def i2v_tag_arch(num_tags: int = 1539) -> list[dict]:
    """The layer list of the published illust2vec_tag.prototxt (VGG-style, 224×224 input).

    Used only to build the network without weights; converted weights carry their own list."""
    blocks = [("1", [64]), ("2", [128]), ("3", [256, 256]), ("4", [512, 512]), ("5", [512, 512])]
    specs, bottom, cin = [], "data", 3
    for b, widths in blocks:
        for i, w in enumerate(widths, 1):
            specs += _conv(f"conv{b}_{i}", bottom, cin, w)
            bottom, cin = f"conv{b}_{i}", w
        specs += _pool(f"pool{b}", bottom)
        bottom = f"pool{b}"
    for i, w in enumerate([1024, 1024, 1024, num_tags], 1):
        layer = _conv(f"conv6_{i}", bottom, cin, w)
        specs += layer if i < 4 else layer[:1]  # no ReLU on conv6_4: it feeds the sigmoid
        bottom, cin = f"conv6_{i}", w
    specs += _pool("pool6", "conv6_4", "AVE", 7, 1)
    specs.append({"name": "prob", "type": "Sigmoid", "bottom": ["pool6"], "top": ["prob"]})
    return specs


I2V_TAG_ARCH = i2v_tag_arch()


def specs_json(specs: list[dict]) -> str:
    return json.dumps(specs, separators=(",", ":"))


# -- converted weights (tasks.tools.convert writes them) -------------------------------------------

FORMAT = "moeflow-caffe-net/1"


def read_metadata(path: str | Path) -> dict[str, str]:
    """The moeflow.* metadata of a converted network's safetensors file, without the prefix."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k.removeprefix("moeflow."): v for k, v in meta.items()}


def load_converted(path: str | Path, map_location: str = "cpu") -> tuple[Illust2Vec, dict[str, str]]:
    """The network a convert() wrote, weights loaded, in eval mode."""
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a moeflow-converted network (format {meta.get('format')!r}); "
                         "convert the caffemodel with python -m tasks.tools.convert")
    model = Illust2Vec(json.loads(meta["layers"]), kind=meta["kind"], output=meta["output"],
                       mean_bgr=json.loads(meta["mean_bgr"]))
    from safetensors.torch import load_file

    model.net.load_state_dict(load_file(str(path), device=map_location))
    return model.eval(), meta
