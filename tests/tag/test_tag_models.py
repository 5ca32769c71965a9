"""The Illustration2Vec loader: caffemodel wire format, network from the file's layer list,
safetensors conversion, numerical parity with a numpy reference computed from the blobs."""

from __future__ import annotations

import gzip
import json
import os
import stat

import numpy as np
import pytest
import torch
from safetensors import safe_open

from models.caffemodel import Blob, CaffeFormatError, Layer, Net, encode_net, parse_net, read_caffemodel
from models.illust2vec import I2V_TAG_ARCH, CaffeNet, Illust2Vec, layer_specs, load_converted, needed_layers
from tasks.tools.convert import convert
from tasks.tools.convert import main as convert_main
from tests.support.tag import reference_forward, synthetic_net

torch.set_num_threads(1)


def _write(tmp_path, net, legacy=False, num_tags=11):
    model = tmp_path / "net.caffemodel"
    model.write_bytes(encode_net(net, legacy=legacy))
    tags = tmp_path / "tag_list.json.gz"
    tags.write_bytes(gzip.compress(json.dumps([f"tag {i}" for i in range(num_tags)]).encode()))
    return model, tags


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "v1-layers"])
def test_wire_round_trip(legacy):
    net = synthetic_net(feature=True)
    back = parse_net(encode_net(net, legacy=legacy))
    assert back.legacy == legacy
    assert [(l.name, l.type, l.bottom, l.top) for l in back.layers] == [(l.name, l.type, l.bottom, l.top) for l in net.layers]
    for a, b in zip(net.layers, back.layers):
        assert len(a.blobs) == len(b.blobs)
        for x, y in zip(a.blobs, b.blobs):
            assert int(np.prod(x.shape)) == int(np.prod(y.shape))
            np.testing.assert_array_equal(x.data, y.data)
    conv = next(l for l in back.layers if l.name == "conv1_1").params["convolution"]
    assert conv["kernel"] == (3, 3) and conv["pad"] == (1, 1) and conv["stride"] == (1, 1)
    pool = next(l for l in back.layers if l.name == "pool2").params["pooling"]
    assert pool["method"] == "AVE" and pool["kernel"] == (2, 2) and pool["stride"] == (2, 2)
    assert next(l for l in back.layers if l.name == "pool6").params["pooling"]["global"]
    assert next(l for l in back.layers if l.name == "data").phases == [0]


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "v1-layers"])
def test_converted_tag_network_matches_numpy_reference(tmp_path, legacy):
    net = synthetic_net(seed=3, feature=True)
    model, tags = _write(tmp_path, net, legacy)
    out = tmp_path / "i2v_tag.safetensors"
    meta = convert(model, out, "tag", tags=tags)
    assert json.loads((tmp_path / "tag_list.json").read_text()) == [f"tag {i}" for i in range(11)]
    with safe_open(str(out), framework="pt") as f:  # safetensors, self-describing, no pickle
        stored = f.metadata()
    assert stored["moeflow.kind"] == "tag" and stored["moeflow.output"] == "conv6_4"
    assert stored["moeflow.source_sha256"] == meta["source_sha256"]
    m, _ = load_converted(out)
    x = np.random.default_rng(7).integers(0, 256, (3, 3, 32, 32)).astype(np.uint8)
    with torch.inference_mode():
        got = m(torch.from_numpy(x)).numpy()
    want = reference_forward(net, x.astype(np.float64), "tag")
    assert got.shape == (3, 11)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # the network has only what conv6_4 needs: no data / loss / encode1 / sigmoid layers
    assert [s["name"] for s in m.net.specs] == ["conv1_1", "relu_conv1_1", "pool1", "conv2_1", "relu_conv2_1", "drop2", "pool2", "conv6_4"]


def test_converted_feature_network_matches_numpy_reference(tmp_path):
    net = synthetic_net(seed=5, feature=True)
    model, _ = _write(tmp_path, net)
    out = tmp_path / "i2v.safetensors"
    assert convert_main(["feature", "--caffemodel", str(model), "--out", str(out)]) == 0
    m, meta = load_converted(out)
    assert meta["output"] == "encode1"
    x = np.random.default_rng(8).integers(0, 256, (2, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        got = m(torch.from_numpy(x)).numpy()
    want = reference_forward(net, x, "feature")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * np.abs(want).max())


def test_tag_list_must_match_outputs(tmp_path):
    model, _ = _write(tmp_path, synthetic_net())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["a", "b"]))
    with pytest.raises(ValueError, match="2 tag names, but conv6_4 has 11 outputs"):
        convert(model, tmp_path / "x.safetensors", "tag", tags=bad)
    assert not (tmp_path / "x.safetensors").exists()


def test_not_a_caffemodel(tmp_path):
    p = tmp_path / "junk.caffemodel"
    p.write_bytes(b"\xff\xff\xff")
    with pytest.raises(CaffeFormatError, match="junk.caffemodel"):
        read_caffemodel(p)


def test_unsupported_layer_is_named():
    net = synthetic_net()
    net.layers.insert(3, Layer("weird", "Eltwise", ["conv1_1"], ["conv1_1"]))
    with pytest.raises(ValueError, match="layer weird: Caffe layer type 'Eltwise' is not supported"):
        CaffeNet(layer_specs(net), "conv6_4")


def test_caffe_pooling_rounds_up():
    """Caffe pools with ceil: 7x7, kernel 3, stride 2 -> 3x3 (floor would also give 3); 8x8 -> 4x4 (floor: 3)."""
    specs = [{"name": "p", "type": "Pooling", "bottom": ["data"], "top": ["p"],
              "params": {"method": "MAX", "kernel": [3, 3], "stride": [2, 2], "pad": [0, 0], "global": False}}]
    net = CaffeNet(specs, "p")
    assert net(torch.zeros(1, 1, 8, 8)).shape[-2:] == (4, 4)


def test_published_architecture_shapes():
    specs = needed_layers(I2V_TAG_ARCH, "conv6_4")
    convs = [s for s in specs if s["type"] == "Convolution"]
    assert [c["name"] for c in convs][-4:] == ["conv6_1", "conv6_2", "conv6_3", "conv6_4"]
    assert convs[-1]["params"]["num_output"] == 1539
    model = Illust2Vec(I2V_TAG_ARCH).eval()
    with torch.inference_mode():
        feat = model.net(torch.zeros(1, 3, 224, 224))
        probs = model(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    assert feat.shape == (1, 1539, 7, 7)
    assert probs.shape == (1, 1539) and bool(((probs >= 0) & (probs <= 1)).all())


def test_legacy_blob_dims_and_transpose(tmp_path):
    """V1 files store 4-D legacy dims (1, 1, N, K) for inner products; transpose=true stores (K, N)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 6)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    for transpose in (False, True):
        stored = w.T.copy() if transpose else w
        net = Net(layers=[Layer("encode1", "InnerProduct", ["data"], ["encode1"],
                                [Blob(stored.shape, stored.ravel()), Blob((4,), b)],
                                {"inner_product": {"num_output": 4, "transpose": transpose}})])
        back = parse_net(encode_net(net, legacy=True))
        assert back.layers[0].blobs[0].shape == (1, 1) + stored.shape
        m = CaffeNet(layer_specs(back), "encode1")
        from models.illust2vec import state_dict_from

        m.load_state_dict(state_dict_from(back, m))
        x = rng.normal(size=(2, 6)).astype(np.float32)
        np.testing.assert_allclose(m(torch.from_numpy(x)).detach().numpy(), x @ w.T + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)], ids=["022", "027"])
def test_models_writes_get_the_mode_a_plain_write_would_have(tmp_path, umask, mode):
    """convert, the checkpoint writers and the run's files use tasks.fileio (the one atomic
    write): 0666 less the umask, not mkstemp's 0600; an overwrite keeps the file's own mode."""
    from models import checkpoint as ckpt
    from tasks.fileio import atomic_copy

    model, tags = _write(tmp_path, synthetic_net(seed=3, feature=True))
    old = os.umask(umask)
    try:
        out = tmp_path / "conv" / "i2v_tag.safetensors"
        convert(model, out, "tag", tags=tags)
        w = tmp_path / "g.safetensors"
        ckpt.save_weights(w, {"x": torch.zeros(2)}, {"k": "v"})
        step = ckpt.save(tmp_path / "ckpt", 1, {"x": torch.zeros(2)}, {"step": 1}, keep=2)
        atomic_copy(w, tmp_path / "copy.safetensors")
        files = [out, out.parent / "tag_list.json", w, tmp_path / "ckpt" / ckpt.LATEST, tmp_path / "copy.safetensors"]
        assert {p.name: oct(stat.S_IMODE(os.stat(p).st_mode)) for p in files} == {p.name: oct(mode) for p in files}
        assert step.is_dir() and not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temp file left
        os.chmod(w, 0o600)
        ckpt.save_weights(w, {"x": torch.ones(2)}, {"k": "v"})
        assert stat.S_IMODE(os.stat(w).st_mode) == 0o600
    finally:
        os.umask(old)
