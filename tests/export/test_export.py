"""The export stage: seed -> z shared with JavaScript, BatchNorm folding and the fast tail are
exact rewrites, ONNX (fp32 / fp16 / int8) matches PyTorch, the manifest drives the page."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from models.dragan import Generator
from tasks.artifacts.generator import load_generator
from tasks.artifacts.tags import MGM_TAGS
from tasks.errors import ConfigError, DataError
from tasks.export.noise import parse_seed, perturb, seed_to_z, slerp, variation_seeds
from tasks.export.onnx_export import export_onnx, fast_tail, fold_batchnorm
from tasks.export.parity import ParityError, inputs_for, run_onnx, session, to_uint8
from tasks.export.run import run_export
from tasks.params.all import Params
from tasks.params.train import ModelConfig
from tasks.typed import build
from tests.conftest import ROOT
from tests.support.export import export_config, make_generator_file, make_training_files, randomize_batchnorm

SEEDS = [0, 1, 42, 2**31 - 1, 2**31, 2**32 - 1, 123456789]


def test_noise_is_standard_normal_and_deterministic():
    z = np.array([seed_to_z(s, 128) for s in range(200)])
    assert z.dtype == np.float64 and z.shape == (200, 128)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert seed_to_z(42, 128) == seed_to_z(42, 128) != seed_to_z(43, 128)
    assert seed_to_z(7, 5) == seed_to_z(7, 6)[:5]  # odd dims: the prefix of the even draw
    assert parse_seed("4294967297") == 1 and parse_seed(5) == 5
    assert len(set(variation_seeds(42, 6))) == 6


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_noise_matches_javascript_bit_for_bit():
    r = subprocess.run(["node", str(ROOT / "tests/export/noise_check.mjs"), json.dumps(SEEDS)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    for s, got in zip(SEEDS, js["seeds"], strict=True):
        z, e = seed_to_z(s, 9), seed_to_z((s + 1) & 0xFFFFFFFF, 9)
        assert got["z"] == z and got["variations"] == variation_seeds(s, 4)
        assert got["perturbed"] == perturb(z, e, 0.3)
        assert got["slerp"] == [slerp(z, e, t) for t in (0, 0.25, 1)]
        assert got["slerp"][0] == z and got["slerp"][2] == e  # the ends are the two characters' noise
        assert got["same"] is True  # the noise survives its URL text and its JSON, bit for bit
    assert js["parsed"] == [parse_seed("4294967297"), parse_seed(12), parse_seed("Miku ♪"), parse_seed("")]


def test_perturb_keeps_the_noise_standard_normal():
    z = np.array([perturb(seed_to_z(s, 128), seed_to_z(s + 999, 128), 0.6) for s in range(100)])
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert perturb([1.0], [5.0], 0.0) == [1.0] and perturb([1.0], [5.0], 1.0) == [5.0]


def _random_generator(**kw) -> Generator:
    torch.manual_seed(1)
    return randomize_batchnorm(Generator(ModelConfig(image_size=32, g_channels=8, g_blocks=2, **kw)).eval(),
                               spread=0.3, var=(0.3, 3.0))


def test_fold_batchnorm_and_fast_tail_compute_the_same_function():
    g = _random_generator()
    folded, n = fold_batchnorm(g)
    assert n == 2 * 2 + 3  # two per residual block, one per upsampling stage
    fast, ok = fast_tail(folded)
    assert ok and isinstance(fast.out, torch.nn.Sequential)
    assert fast_tail(g)[1] is False  # an unfolded BatchNorm after the last PixelShuffle: left alone
    z, t = torch.randn(5, 128), (torch.rand(5, 34) > 0.5).float()
    with torch.no_grad():
        ref = g(z, t)
        assert torch.allclose(folded(z, t), ref, atol=1e-5)
        assert torch.allclose(fast(z, t), ref, atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())  # the original is untouched


def test_onnx_has_dynamic_batch_and_recent_opset():
    g = _random_generator()
    proto = export_onnx(fast_tail(fold_batchnorm(g)[0])[0], 128, 34, 18)
    assert proto.opset_import[0].version == 18
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 128]
    sess = session(proto.SerializeToString())
    for n in (1, 3):
        z, t = inputs_for(list(range(n)), [[0.0] * 34] * n, 128)
        with torch.no_grad():
            ref = g(torch.from_numpy(z), torch.from_numpy(t)).numpy()
        np.testing.assert_allclose(run_onnx(sess, z, t), ref, atol=1e-5)


@pytest.mark.parametrize("variant, max_mb_ratio", [("none", 1.0), ("fp16", 0.55), ("int8", 0.3)])
def test_export_stage_writes_models_manifest_and_report(tmp_path, variant, max_mb_ratio):
    src = make_generator_file(tmp_path / "train/generator.safetensors",
                              sampler={"n_tags": 34, "groups": [[0, 13, [1 / 13] * 13]], "independent": {"13": 0.5}})
    cfg = export_config(tmp_path, variant=variant)
    report = run_export(cfg, src)
    fp32, web = (tmp_path / "export/generator.onnx"), (tmp_path / "model/generator.onnx")
    onnx.checker.check_model(onnx.load(str(web)))
    assert report["variant"] == variant and report["fast_tail"] and report["batchnorm_folded"] == 1 * 2 + 3
    assert web.stat().st_size <= max_mb_ratio * fp32.stat().st_size + 1
    assert report["parity_fp32"]["max_abs"] < 1e-4
    assert report["parity_web"]["max_abs"] < {"none": 1e-4, "fp16": 0.01, "int8": 0.1}[variant]
    assert report["within_goal"] and report["cpu_ms_per_image"] > 0
    stored = json.loads((tmp_path / "export/report.json").read_text())
    assert stored == {k: v for k, v in report.items() if k not in ("cpu_ms_per_image", "seconds")}
    assert "cpu_ms_per_image" not in stored  # a timing: the run report's, not the DVC metric's
    assert json.loads((tmp_path / "export/metrics.json").read_text()) == {"web_mb": report["web_mb"],
                                                                        "parity": report["parity_web"]["max_abs"]}
    man = json.loads((tmp_path / "model/model.json").read_text())
    assert man["model"] == "generator.onnx" and man["bytes"] == web.stat().st_size
    assert man["tags"] == list(MGM_TAGS) and man["z_dim"] == 128 and man["image_size"] == 32
    assert [(g["name"], g["kind"], g["start"], g["stop"]) for g in man["groups"]] == [
        ("hair_color", "one-hot", 0, 13), ("hair_style", "independent", 13, 18),
        ("other", "independent", 18, 24), ("eye_color", "one-hot", 24, 34)]
    assert man["frequencies"]["independent"] == {"13": 0.5} and man["noise"] == "mulberry32-boxmuller-v1"
    # the web model reproduces PyTorch for the page's seeds, to the pixel (uint8 conversion as on the page)
    g, _, _ = load_generator(src)
    z, t = inputs_for([5, 6], [[1.0] + [0.0] * 33] * 2, 128)
    with torch.no_grad():
        ref = to_uint8(g(torch.from_numpy(z), torch.from_numpy(t)).numpy()).astype(int)
    got = to_uint8(run_onnx(session(web), z, t)).astype(int)
    assert np.abs(got - ref).max() <= {"none": 1, "fp16": 1, "int8": 8}[variant]


def test_parity_failure_is_an_error(tmp_path):
    src = make_generator_file(tmp_path / "g.safetensors")
    cfg = build(type(export_config(tmp_path)), {"variant": "int8", "parity": {"variant_atol": 1e-9},
                                                 "out": vars(export_config(tmp_path).out)})
    with pytest.raises(ParityError, match="int8 ONNX differs from PyTorch"):
        run_export(cfg, src)
    assert not (tmp_path / "model/generator.onnx").exists()  # nothing written on failure


def test_bad_generator_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="run the train stage first"):
        load_generator(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a readable safetensors file"):
        load_generator(bad)
    from safetensors.torch import save_file

    save_file({"g_ema.fc.weight": torch.zeros(2, 2)}, str(tmp_path / "nometa.safetensors"))
    with pytest.raises(DataError, match="no model config"):
        load_generator(tmp_path / "nometa.safetensors")
    src = make_generator_file(tmp_path / "g.safetensors")
    meta_cfg = {"image_size": 32, "g_channels": 16, "g_blocks": 1, "d_channels": [8, 16]}
    from safetensors.torch import load_file

    save_file(load_file(str(src)), str(tmp_path / "wrong.safetensors"), metadata={"model": json.dumps(meta_cfg)})
    with pytest.raises(DataError, match="do not fit"):
        load_generator(tmp_path / "wrong.safetensors")


@pytest.mark.parametrize("data, message", [
    ({"opset": 12}, "export.opset: expected 14..20"),
    ({"variant": "int4"}, "export.variant: expected 'none' | 'fp16' | 'int8'"),
    ({"parity": {"atol": 0}}, "export.parity.atol: expected (0, 2]"),
    ({"out": {"web": "web/model.bin"}}, "export.out.web: expected an .onnx path"),
    ({"out": {"web": "data/export/generator.onnx"}}, "export.out.web: must differ"),
    ({"fold_batchnorm": False}, "export.fast_tail: needs fold_batchnorm"),
])
def test_bad_export_params_name_the_key(data, message):
    with pytest.raises(ConfigError) as e:
        build(Params, {"export": data})
    assert message in str(e.value)


def test_flow_cli_exports_from_params(tmp_path):
    src = make_generator_file(tmp_path / "g.safetensors")
    data, attributes = make_training_files(tmp_path, trained=["long_hair", "blush"], known_off=["hat"],
                                           holdout_only=["glasses"])
    out = vars(export_config(tmp_path).out)
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"export": {"generator": str(src), "variant": "fp16", "out": out}}))
    cmd = [sys.executable, "-m", "tasks.export", "--params", str(params), "--data", str(data)]
    r = subprocess.run(cmd + ["--attributes", str(tmp_path / "missing.json")], cwd=ROOT, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "missing.json does not exist (run the render stage first)" in r.stderr
    r = subprocess.run(cmd + ["--attributes", str(attributes)], cwd=ROOT, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "the page offers 25 of 34 tags" in r.stderr
    assert json.loads((tmp_path / "export/report.json").read_text())["variant"] == "fp16"
    man = json.loads((tmp_path / "model/model.json").read_text())
    # which tags the generator learned: on for some training face (held-out faces are not trained on)
    trained = dict(zip(man["tags"], man["training"]["trained"]))
    assert [t for t, ok in trained.items() if not ok] == [
        "short_hair", "twintails", "drill_hair", "ponytail", "smile", "open_mouth", "hat", "ribbon", "glasses"]
    i = MGM_TAGS.index
    assert man["training"]["faces"] == 20 and man["training"]["tagger"] == "test"
    assert man["training"]["known"][i("hat")] == 20 and man["training"]["positive"][i("hat")] == 0
    assert man["training"]["known"][i("smile")] == 0 and man["training"]["positive"][i("long_hair")] == 10
    assert man["training"]["positive"][i("glasses")] == 0
    # how well each is followed: render's measurement, or its reason
    a = man["agreement"]["attributes"]
    assert a["hair_color"] == {"agreement": 0.8125, "read": 16, "known": 50, "ceiling": 0.9}
    assert a["smile"]["agreement"] is None and "no training face" in a["smile"]["reason"]
