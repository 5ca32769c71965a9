"""Read (and, for tests, write) Caffe `.caffemodel` files without Caffe or protobuf.

A caffemodel is a serialized `caffe.NetParameter` (src/caffe/proto/caffe.proto). Only the
fields a loader needs are decoded here, by hand from the protobuf wire format:

- NetParameter: name=1, input=3, input_dim=4, input_shape=8 (BlobShape), layer=100
  (LayerParameter), layers=2 (legacy V1LayerParameter).
- LayerParameter: name=1, type=2 (string), bottom=3, top=4, blobs=7, include=8 (NetStateRule,
  phase=1), convolution_param=106, inner_product_param=117, pooling_param=121, relu_param=123,
  lrn_param=118, dropout_param=108.
- V1LayerParameter: bottom=2, top=3, name=4, type=5 (LayerType enum), blobs=6, include=32,
  convolution_param=10, inner_product_param=17, pooling_param=19, relu_param=30, lrn_param=18.
- BlobProto: shape=7 (BlobShape: dim=1, packed int64), data=5 (packed float), double_data=8,
  legacy num/channels/height/width = 1..4.
- ConvolutionParameter: num_output=1, bias_term=2, pad=3, kernel_size=4, group=5, stride=6,
  pad_h/pad_w=9/10, kernel_h/kernel_w=11/12, stride_h/stride_w=13/14, dilation=18.
- PoolingParameter: pool=1 (MAX=0, AVE=1), kernel_size=2, stride=3, pad=4, kernel_h/w=5/6,
  stride_h/w=7/8, pad_h/w=9/10, global_pooling=12.
- InnerProductParameter: num_output=1, bias_term=2, axis=5, transpose=6.
- ReLUParameter: negative_slope=1 (float). LRNParameter: local_size=1, alpha=2, beta=3, k=5.
Unknown fields are skipped, as protobuf does. Float arrays are read with numpy, not per value."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

V1_TYPES = {0: "None", 35: "AbsVal", 1: "Accuracy", 30: "ArgMax", 2: "BNLL", 3: "Concat", 37: "ContrastiveLoss",
            4: "Convolution", 5: "Data", 39: "Deconvolution", 6: "Dropout", 32: "DummyData", 7: "EuclideanLoss",
            25: "Eltwise", 38: "Exp", 8: "Flatten", 9: "HDF5Data", 10: "HDF5Output", 28: "HingeLoss", 11: "Im2col",
            12: "ImageData", 13: "InfogainLoss", 14: "InnerProduct", 15: "LRN", 29: "MemoryData",
            16: "MultinomialLogisticLoss", 34: "MVN", 17: "Pooling", 26: "Power", 18: "ReLU", 19: "Sigmoid",
            27: "SigmoidCrossEntropyLoss", 36: "Silence", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split",
            33: "Slice", 23: "TanH", 24: "WindowData", 31: "Threshold"}
V1_CODES = {v: k for k, v in V1_TYPES.items()}
# (layer=LayerParameter, layers=V1LayerParameter) field numbers
_NEW = dict(name=1, type=2, bottom=3, top=4, blobs=7, include=8, conv=106, ip=117, pool=121, relu=123, lrn=118)
_V1 = dict(name=4, type=5, bottom=2, top=3, blobs=6, include=32, conv=10, ip=17, pool=19, relu=30, lrn=18)


class CaffeFormatError(ValueError):
    """The bytes are not a caffemodel this reader understands."""


# --- wire format -----------------------------------------------------------------------------

def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CaffeFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise CaffeFormatError("varint too long")


def iter_fields(buf: memoryview):
    """(field number, wire type, value): an int for varint/fixed, a memoryview for length-delimited."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise CaffeFormatError(f"field {num}: length {n} runs past the end")
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise CaffeFormatError(f"unsupported wire type {wt} (field {num})")
        yield num, wt, val


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(wt: int, val) -> list[int]:
    """A repeated integer field value, packed (wire type 2) or not."""
    if wt == 0:
        return [_signed(val)]
    out, pos, mv = [], 0, val
    while pos < len(mv):
        v, pos = _varint(mv, pos)
        out.append(_signed(v))
    return out


def _floats(wt: int, val, dtype="<f4") -> np.ndarray:
    return np.frombuffer(bytes(val) if wt != 2 else val, dtype=dtype)


def _float(wt: int, val) -> float:
    return float(struct.unpack("<f", bytes(val))[0])


# --- messages ---------------------------------------------------------------------------------

@dataclass
class Blob:
    shape: tuple[int, ...]
    data: np.ndarray  # float32, flat


@dataclass
class Layer:
    name: str
    type: str
    bottom: list[str] = field(default_factory=list)
    top: list[str] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    params: dict = field(default_factory=dict)  # decoded type-specific parameters
    phases: list[int] = field(default_factory=list)  # include rules' phases (0 TRAIN, 1 TEST)


@dataclass
class Net:
    name: str = ""
    inputs: list[str] = field(default_factory=list)
    input_dims: list[int] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)
    legacy: bool = False


def _parse_blob(buf) -> Blob:
    shape: list[int] = []
    legacy = [0, 0, 0, 0]
    chunks: list[np.ndarray] = []
    for num, wt, val in iter_fields(buf):
        if num == 7:
            for n2, wt2, v2 in iter_fields(val):
                if n2 == 1:
                    shape += _ints(wt2, v2)
        elif num == 5:
            chunks.append(_floats(wt, val))
        elif num == 8:
            chunks.append(_floats(wt, val, "<f8").astype(np.float32))
        elif 1 <= num <= 4 and wt == 0:
            legacy[num - 1] = _signed(val)
    data = chunks[0] if len(chunks) == 1 else (np.concatenate(chunks) if chunks else np.zeros(0, np.float32))
    if not shape and any(legacy):
        shape = legacy
    if int(np.prod(shape)) != data.size:
        raise CaffeFormatError(f"blob shape {shape} does not match its {data.size} values")
    return Blob(tuple(int(s) for s in shape), data.astype(np.float32, copy=False))


def _hw(single: list[int], h: int | None, w: int | None, default: int) -> tuple[int, int]:
    if h is not None or w is not None:
        return (h if h is not None else default, w if w is not None else default)
    if not single:
        return default, default
    return (single[0], single[-1])


def _parse_conv(buf) -> dict:
    rep: dict[int, list[int]] = {}
    for num, wt, val in iter_fields(buf):
        if wt in (0, 2) and num in (1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 18):
            rep.setdefault(num, []).extend(_ints(wt, val))
    one = lambda n, d: rep[n][-1] if n in rep else d  # noqa: E731
    return {"num_output": one(1, 0), "bias_term": bool(one(2, 1)), "group": one(5, 1),
            "kernel": _hw(rep.get(4, []), one(11, None), one(12, None), 1),
            "stride": _hw(rep.get(6, []), one(13, None), one(14, None), 1),
            "pad": _hw(rep.get(3, []), one(9, None), one(10, None), 0),
            "dilation": _hw(rep.get(18, []), None, None, 1)}


def _parse_pool(buf) -> dict:
    rep: dict[int, list[int]] = {}
    for num, wt, val in iter_fields(buf):
        if wt in (0, 2):
            rep.setdefault(num, []).extend(_ints(wt, val))
    one = lambda n, d: rep[n][-1] if n in rep else d  # noqa: E731
    method = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}.get(one(1, 0), "MAX")
    return {"method": method, "kernel": _hw(rep.get(2, []), one(5, None), one(6, None), 1),
            "stride": _hw(rep.get(3, []), one(7, None), one(8, None), 1),
            "pad": _hw(rep.get(4, []), one(9, None), one(10, None), 0), "global": bool(one(12, 0))}


def _parse_ip(buf) -> dict:
    out = {"num_output": 0, "bias_term": True, "axis": 1, "transpose": False}
    for num, wt, val in iter_fields(buf):
        if wt == 0 and num in (1, 2, 5, 6):
            key = {1: "num_output", 2: "bias_term", 5: "axis", 6: "transpose"}[num]
            out[key] = bool(val) if num in (2, 6) else _signed(val)
    return out


def _parse_relu(buf) -> dict:
    slope = 0.0
    for num, wt, val in iter_fields(buf):
        if num == 1 and wt == 5:
            slope = _float(wt, val)
    return {"negative_slope": slope}


def _parse_lrn(buf) -> dict:
    out = {"local_size": 5, "alpha": 1.0, "beta": 0.75, "k": 1.0}
    for num, wt, val in iter_fields(buf):
        if num == 1 and wt == 0:
            out["local_size"] = val
        elif num in (2, 3, 5) and wt == 5:
            out[{2: "alpha", 3: "beta", 5: "k"}[num]] = _float(wt, val)
    return out


_PARAM_PARSERS = {"conv": ("convolution", _parse_conv), "ip": ("inner_product", _parse_ip),
                  "pool": ("pooling", _parse_pool), "relu": ("relu", _parse_relu), "lrn": ("lrn", _parse_lrn)}


def _parse_layer(buf, f: dict, legacy: bool) -> Layer:
    layer = Layer(name="", type="")
    by_num = {v: k for k, v in f.items()}
    for num, wt, val in iter_fields(buf):
        key = by_num.get(num)
        if key == "name":
            layer.name = bytes(val).decode("utf-8")
        elif key == "type":
            layer.type = V1_TYPES.get(val, f"V1:{val}") if legacy else bytes(val).decode("utf-8")
        elif key == "bottom":
            layer.bottom.append(bytes(val).decode("utf-8"))
        elif key == "top":
            layer.top.append(bytes(val).decode("utf-8"))
        elif key == "blobs":
            layer.blobs.append(_parse_blob(val))
        elif key == "include":
            layer.phases += [v for n2, w2, v in iter_fields(val) if n2 == 1 and w2 == 0]
        elif key in _PARAM_PARSERS:
            name, parse = _PARAM_PARSERS[key]
            layer.params[name] = parse(val)
    return layer


def parse_net(data: bytes | memoryview) -> Net:
    """Decode a NetParameter (new `layer` or legacy `layers` lists)."""
    buf = memoryview(data)
    net = Net()
    for num, wt, val in iter_fields(buf):
        if num == 1 and wt == 2:
            net.name = bytes(val).decode("utf-8", "replace")
        elif num == 3 and wt == 2:
            net.inputs.append(bytes(val).decode("utf-8"))
        elif num == 4:
            net.input_dims += _ints(wt, val)
        elif num == 8 and wt == 2:
            net.input_dims += [d for n2, w2, v2 in iter_fields(val) if n2 == 1 for d in _ints(w2, v2)]
        elif num == 100 and wt == 2:
            net.layers.append(_parse_layer(val, _NEW, legacy=False))
        elif num == 2 and wt == 2:
            net.legacy = True
            net.layers.append(_parse_layer(val, _V1, legacy=True))
    if not net.layers:
        raise CaffeFormatError("no layers found (not a caffe NetParameter?)")
    return net


def read_caffemodel(path: str | Path) -> Net:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: caffemodel not found") from None
    try:
        return parse_net(data)
    except CaffeFormatError as e:
        raise CaffeFormatError(f"{path}: {e}") from None


# --- writer (tests, tools) ---------------------------------------------------------------------

def _enc_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(num: int, wt: int) -> bytes:
    return _enc_varint(num << 3 | wt)


def _len_field(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + _enc_varint(len(payload)) + payload


def _int_field(num: int, v: int) -> bytes:
    return _key(num, 0) + _enc_varint(int(v))


def _float_field(num: int, v: float) -> bytes:
    return _key(num, 5) + struct.pack("<f", v)


def encode_blob(blob: Blob, legacy: bool = False) -> bytes:
    out = b""
    if legacy:
        dims = (1,) * (4 - len(blob.shape)) + tuple(blob.shape)
        out += b"".join(_int_field(i + 1, d) for i, d in enumerate(dims))
    else:
        out += _len_field(7, _len_field(1, b"".join(_enc_varint(d) for d in blob.shape)))
    return out + _len_field(5, np.asarray(blob.data, "<f4").tobytes())


def _encode_params(layer: Layer, f: dict) -> bytes:
    out = b""
    p = layer.params
    if "convolution" in p:
        c = p["convolution"]
        body = _int_field(1, c["num_output"]) + _int_field(2, int(c.get("bias_term", True)))
        kh, kw = c["kernel"]
        sh, sw = c.get("stride", (1, 1))
        ph, pw = c.get("pad", (0, 0))
        body += (_int_field(3, ph) + _int_field(4, kh) + _int_field(6, sh)) if (kh, sh, ph) == (kw, sw, pw) else (
            _int_field(9, ph) + _int_field(10, pw) + _int_field(11, kh) + _int_field(12, kw)
            + _int_field(13, sh) + _int_field(14, sw))
        if c.get("group", 1) != 1:
            body += _int_field(5, c["group"])
        out += _len_field(f["conv"], body)
    if "pooling" in p:
        q = p["pooling"]
        body = _int_field(1, {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}[q["method"]])
        if q.get("global"):
            body += _int_field(12, 1)
        else:
            body += _int_field(2, q["kernel"][0]) + _int_field(3, q.get("stride", (1, 1))[0]) + _int_field(4, q.get("pad", (0, 0))[0])
        out += _len_field(f["pool"], body)
    if "inner_product" in p:
        q = p["inner_product"]
        body = _int_field(1, q["num_output"]) + _int_field(2, int(q.get("bias_term", True)))
        if q.get("transpose"):
            body += _int_field(6, 1)
        out += _len_field(f["ip"], body)
    if "relu" in p and p["relu"].get("negative_slope"):
        out += _len_field(f["relu"], _float_field(1, p["relu"]["negative_slope"]))
    return out


def encode_layer(layer: Layer, legacy: bool = False) -> bytes:
    f = _V1 if legacy else _NEW
    out = _len_field(f["name"], layer.name.encode())
    out += _int_field(f["type"], V1_CODES[layer.type]) if legacy else _len_field(f["type"], layer.type.encode())
    out += b"".join(_len_field(f["bottom"], b.encode()) for b in layer.bottom)
    out += b"".join(_len_field(f["top"], t.encode()) for t in layer.top)
    out += b"".join(_len_field(f["include"], _int_field(1, ph)) for ph in layer.phases)
    out += _encode_params(layer, f)
    out += b"".join(_len_field(f["blobs"], encode_blob(b, legacy)) for b in layer.blobs)
    return out


def encode_net(net: Net, legacy: bool | None = None) -> bytes:
    """Serialize a Net (new `layer` list, or legacy V1 `layers` when legacy)."""
    legacy = net.legacy if legacy is None else legacy
    out = _len_field(1, net.name.encode()) if net.name else b""
    out += b"".join(_len_field(3, i.encode()) for i in net.inputs)
    out += b"".join(_int_field(4, d) for d in net.input_dims)
    num = 2 if legacy else 100
    return out + b"".join(_len_field(num, encode_layer(layer, legacy)) for layer in net.layers)
