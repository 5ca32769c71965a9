"""The generator to ONNX: load the EMA weights, fold BatchNorm, export with a dynamic batch,
and write the smaller web variant (fp16 or int8 weights, computed in fp32, so every
onnxruntime backend - CPU, WASM, WebGPU - runs it with the fp32 kernels)."""

from __future__ import annotations

import copy
import io
import logging
import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

log = logging.getLogger(__name__)

INPUTS = ("z", "tags")
OUTPUT = "image"
MIN_ELEMENTS = 256  # smaller initializers (biases, scales) stay fp32: not worth a node each


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    return scale, shift


def _fold_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d, repeat: int) -> None:
    scale, shift = _bn_scale_shift(bn)
    scale, shift = scale.repeat_interleave(repeat), shift.repeat_interleave(repeat)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bias * scale + shift)


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy with every BatchNorm2d that directly follows a Conv2d (optionally with
    a PixelShuffle between) folded into that conv. Returns (model, BatchNorms folded)."""
    model = copy.deepcopy(model).eval()
    folded = 0
    with torch.no_grad():
        for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
            mods = list(seq)
            for i, m in enumerate(mods):
                if not isinstance(m, nn.BatchNorm2d) or not m.track_running_stats or i == 0:
                    continue
                prev, repeat = mods[i - 1], 1
                if isinstance(prev, nn.PixelShuffle) and i >= 2:
                    prev, repeat = mods[i - 2], prev.upscale_factor ** 2
                if isinstance(prev, nn.Conv2d) and prev.groups == 1 and prev.out_channels == m.num_features * repeat:
                    _fold_into_conv(prev, m, repeat)
                    seq[i] = nn.Identity()
                    folded += 1
    return model, folded


def _s2d_conv(conv: nn.Conv2d, r: int) -> nn.Conv2d | None:
    """The conv `conv` applied after PixelShuffle(r), as an equivalent conv applied before it
    (on the r*r*C-channel, r-times smaller input) whose r*r*O outputs a PixelShuffle(r) turns
    into conv's output. None when conv is not a stride-1, 'same'-padded, ungrouped conv."""
    k, p = conv.kernel_size[0], conv.padding
    if (conv.kernel_size != (k, k) or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1
            or p != (k // 2, k // 2) or k % 2 == 0):
        return None
    p = k // 2
    lo, hi = -((p + r - 1) // r), (r - 1 + p) // r  # block offsets a tap can reach: floor(-p/r)..floor((r-1+p)/r)
    if lo != -hi:
        return None
    kk = 2 * hi + 1
    w = conv.weight.detach()
    o_n, c_n = w.shape[:2]
    new = torch.zeros(o_n * r * r, c_n * r * r, kk, kk, dtype=w.dtype)
    for oa in range(r):
        for ob in range(r):
            for ia in range(r):
                for ib in range(r):
                    for di in range(lo, hi + 1):
                        u = r * di + ia - oa + p
                        if not 0 <= u < k:
                            continue
                        for dj in range(lo, hi + 1):
                            v = r * dj + ib - ob + p
                            if 0 <= v < k:
                                new[oa * r + ob::r * r, ia * r + ib::r * r, di - lo, dj - lo] = w[:, :, u, v]
    out = nn.Conv2d(c_n * r * r, o_n * r * r, kk, 1, hi, bias=True)
    with torch.no_grad():
        out.weight.copy_(new)
        out.bias.copy_((conv.bias.detach() if conv.bias is not None else torch.zeros(o_n)).repeat_interleave(r * r))
    return out


def fast_tail(model: nn.Module) -> tuple[nn.Module, bool]:
    """A copy where the full-resolution output conv (Make.Girls.Moe: 9x9, 64 -> 3 at 128 px, half
    the generator's time) runs before the last PixelShuffle instead of after it: the same function
    on a 4x smaller image with 4x the channels, then one cheap PixelShuffle of 12 channels. Needs
    `model.up` to end in [PixelShuffle(r), Identity (a folded BatchNorm), ReLU] and `model.out` to
    be a Conv2d; otherwise the model is returned unchanged (False)."""
    up, out = getattr(model, "up", None), getattr(model, "out", None)
    if not (isinstance(up, nn.Sequential) and len(up) >= 3 and isinstance(out, nn.Conv2d)):
        return model, False
    shuffle, bn, act = up[-3], up[-2], up[-1]
    if not (isinstance(shuffle, nn.PixelShuffle) and isinstance(bn, nn.Identity) and isinstance(act, nn.ReLU)):
        return model, False
    conv = _s2d_conv(out, shuffle.upscale_factor)
    if conv is None:
        return model, False
    model = copy.deepcopy(model)
    model.up = nn.Sequential(*list(up)[:-3], nn.ReLU())
    model.out = nn.Sequential(conv, nn.PixelShuffle(shuffle.upscale_factor))
    return model, True


def export_onnx(model: nn.Module, z_dim: int, n_tags: int, opset: int) -> onnx.ModelProto:
    """The model as ONNX: inputs z [N, z_dim], tags [N, n_tags] (float32), output image [N, 3, H, W]."""
    model = model.eval()
    z, tags = torch.zeros(2, z_dim), torch.zeros(2, n_tags)
    buf = io.BytesIO()
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch >= 2.9 warns that the TorchScript exporter is legacy
        torch.onnx.export(model, (z, tags), buf, dynamo=False, opset_version=opset, input_names=list(INPUTS),
                          output_names=[OUTPUT], dynamic_axes={"z": batch, "tags": batch, OUTPUT: batch},
                          do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "moeflow"
    onnx.checker.check_model(proto)
    return proto


def _weights(proto: onnx.ModelProto):
    for init in proto.graph.initializer:
        if init.data_type == TensorProto.FLOAT and np.prod(init.dims, dtype=np.int64) >= MIN_ELEMENTS:
            yield init


def _replace(proto: onnx.ModelProto, replaced: dict[str, tuple[list[onnx.TensorProto], onnx.NodeProto]]) -> None:
    keep = [i for i in proto.graph.initializer if i.name not in replaced]
    new_inits = [t for ts, _ in replaced.values() for t in ts]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep + new_inits)
    nodes = [n for _, n in replaced.values()] + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def to_fp16_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Weights stored as float16, each cast back to float32 by a Cast node (onnxruntime folds
    the casts when the session loads): half the size, fp32 arithmetic."""
    proto = copy.deepcopy(proto)
    replaced = {}
    for init in _weights(proto):
        w = np.clip(numpy_helper.to_array(init), -65504, 65504).astype(np.float16)
        t = numpy_helper.from_array(w, init.name + "__fp16")
        replaced[init.name] = ([t], helper.make_node("Cast", [t.name], [init.name], to=TensorProto.FLOAT,
                                                     name=init.name + "__cast"))
    _replace(proto, replaced)
    onnx.checker.check_model(proto)
    return proto


def to_int8_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Weights stored as int8 with one float scale per output row / channel (axis 0, symmetric),
    dequantized to float32 by DequantizeLinear: a quarter of the size, fp32 arithmetic."""
    proto = copy.deepcopy(proto)
    replaced = {}
    for init in _weights(proto):
        w = numpy_helper.to_array(init).astype(np.float32)
        flat = w.reshape(w.shape[0], -1)
        scale = np.abs(flat).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(flat / scale[:, None]), -127, 127).astype(np.int8).reshape(w.shape)
        tq = numpy_helper.from_array(q, init.name + "__q")
        ts = numpy_helper.from_array(scale.astype(np.float32), init.name + "__scale")
        tz = numpy_helper.from_array(np.zeros(len(scale), np.int8), init.name + "__zero")
        node = helper.make_node("DequantizeLinear", [tq.name, ts.name, tz.name], [init.name], axis=0,
                                name=init.name + "__dq")
        replaced[init.name] = ([tq, ts, tz], node)
    _replace(proto, replaced)
    onnx.checker.check_model(proto)
    return proto


def make_variant(proto: onnx.ModelProto, variant: str) -> onnx.ModelProto:
    if variant == "fp16":
        return to_fp16_weights(proto)
    if variant == "int8":
        return to_int8_weights(proto)
    return proto
