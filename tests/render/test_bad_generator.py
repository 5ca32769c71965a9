"""A generator file that is not what the train stage writes (issue 21, items 10 and 11): render and
export each say so in one `error:` line, never a traceback, write nothing, and refuse a recorded
config beyond sane bounds before allocating anything."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from models.conditioning import tag_frequencies
from models.dragan import Discriminator, Generator
from tasks.artifacts.detector import write_detector_spec
from tasks.artifacts.tagger import write_tagger_spec
from tasks.params.detect import DetectConfig
from tasks.params.export import ExportConfig
from tasks.params.render import RenderConfig
from tasks.params.tag import TagConfig
from tasks.params.train import ModelConfig, discriminator_size, generator_size
from tasks.stage import main as stage_main
from tasks.typed import build, to_dict
from tests.conftest import ROOT
from tests.support.export import TINY, make_generator_file
from tests.support.logs import restore_logging  # noqa: F401 - autouse fixture
from tests.support.train import random_attributes

HUGE = {"image_size": 8192, "g_channels": 4096}  # the issue's: 2.78 TB of generator
WIDE = {"image_size": 1024, "g_channels": 1024}  # each key within its bound, the whole ~11 GB


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    sampler = tag_frequencies(random_attributes(64))
    return make_generator_file(tmp_path_factory.mktemp("gen") / "good.safetensors", sampler=sampler)


def resave(good: Path, dest: Path, tensors=None, **meta) -> Path:
    """`good`'s tensors (or `tensors`) and metadata, with `meta` replacing keys (a dict value as JSON)."""
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        old = dict(f.metadata())
    new = {**old, **{k: json.dumps(v) if isinstance(v, dict) else v for k, v in meta.items()}}
    save_file(load_file(str(good)) if tensors is None else tensors, str(dest), metadata=new)
    return dest


def bad_files(good: Path, d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its one error line says after `error: <file>: `)."""
    data = good.read_bytes()
    model = {**to_dict(ModelConfig(**TINY))}
    tensors = load_file(str(good))
    first = sorted(tensors)[0]
    (d / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (d / "empty.safetensors").write_bytes(b"")
    torch.save({k: v for k, v in tensors.items()}, d / "pickle.safetensors")
    return {
        "truncated": (d / "truncated.safetensors", "not a readable safetensors file: "),
        "empty": (d / "empty.safetensors", "not a readable safetensors file: "),
        "torch-pickle": (d / "pickle.safetensors", "not a readable safetensors file: "),
        "wrong-shape": (resave(good, d / "shape.safetensors", {**tensors, first: torch.zeros(3, 3)}),
                        f"its weights do not fit the generator of its config: 1 tensor(s) of another shape, e.g. "
                        f"{first} is [3, 3], the config's generator has [{', '.join(map(str, tensors[first].shape))}]"),
        "missing-tensor": (resave(good, d / "missing.safetensors", {k: v for k, v in tensors.items() if k != first}),
                           f"its weights do not fit the generator of its config: 1 tensor(s) missing, e.g. {first}"),
        "extra-tensor": (resave(good, d / "extra.safetensors", {**tensors, "g_ema.more.weight": torch.zeros(2)}),
                         "its weights do not fit the generator of its config: 1 tensor(s) it does not have, e.g. "
                         "g_ema.more.weight"),
        "huge-config": (resave(good, d / "huge.safetensors", model={**model, **HUGE}),
                        "bad model config in its metadata: model.image_size: at most 1024, got 8192"),
        "wide-config": (resave(good, d / "wide.safetensors", model={**model, **WIDE}),
                        "bad model config in its metadata: model: the generator would have 2,867,082,243 "
                        "parameters (at most 250,000,000)"),
        "config-not-json": (resave(good, d / "notjson.safetensors", model="{image_size: 32"),
                            "bad model config in its metadata: "),
        "bad-step": (resave(good, d / "step.safetensors", step="seven"), "metadata step 'seven' is not a step number"),
    }


SAMPLER_ONLY = {  # render draws tags from these; export only copies them into the page's manifest
    "sampler-n-tags": ({"n_tags": 10**12, "groups": [], "independent": {}},
                       "no usable tag frequencies in its metadata (`sampler`): n_tags 1000000000000, the generator "
                       "takes 34"),
    "sampler-probabilities": ({"n_tags": 34, "groups": [[0, 2, [-1.0, 0.5]]], "independent": {}},
                              "no usable tag frequencies in its metadata (`sampler`): group [0, 2, [-1.0, 0.5]] is "
                              "not [start, stop, probabilities] within 34 tags"),
}


def render_setup(root: Path, generator: Path) -> tuple[Path, list[str]]:
    (root / "data.parquet").write_bytes(b"")  # render checks it exists; the generator is read before it
    write_detector_spec(root / "detector.json", DetectConfig(cascade=str(ROOT.parent / "shared/models/"
                                                                          "lbpcascade_animeface.xml")), None)
    write_tagger_spec(root / "tagger.json", TagConfig(), "color", "test")
    render = {"generator": str(generator), "device": "cpu", "tagger": "none", "eval_samples": 0,
              "out": {k: str(root / "out" / k) for k in ("samples", "summary", "metrics", "attributes")}}
    export = {"generator": str(generator), "out": {k: str(root / "out" / f"{k}.{ext}") for k, ext in (
        ("onnx", "onnx"), ("web", "onnx"), ("manifest", "json"), ("report", "json"), ("metrics", "json"))}}
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"render": render, "export": export}), encoding="utf-8")
    return params, ["--data", str(root / "data.parquet"), "--tagger", str(root / "tagger.json"),
                    "--detector", str(root / "detector.json")]


def export_inputs(root: Path) -> list[str]:
    """The export stage's inputs (the training dataset, render's attributes.json): read after the generator."""
    return ["--data", str(root / "data.parquet"), "--attributes", str(root / "out" / "attributes")]


def run_stage(stage: str, root: Path, generator: Path, monkeypatch, capsys) -> tuple[int, list[str]]:
    from tasks.export.__main__ import INPUTS as EXPORT_INPUTS, run as export_run
    from tasks.render.__main__ import INPUTS, run as render_run

    params, paths = render_setup(root, generator)
    monkeypatch.chdir(root)
    if stage == "render":
        code = stage_main("render", RenderConfig, render_run, argv=["--params", str(params), *paths], inputs=INPUTS)
    else:
        code = stage_main("export", ExportConfig, export_run, argv=["--params", str(params), *export_inputs(root)],
                          inputs=EXPORT_INPUTS)
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("stage", ["render", "export"])
def test_a_bad_generator_file_is_one_line_and_writes_nothing(good, tmp_path, monkeypatch, capsys, stage):
    cases = bad_files(good, tmp_path)
    if stage == "render":
        cases |= {name: (resave(good, tmp_path / f"{name}.safetensors", sampler=s), m)
                  for name, (s, m) in SAMPLER_ONLY.items()}
    for name, (path, message) in cases.items():
        root = tmp_path / name
        root.mkdir()
        code, err = run_stage(stage, root, path, monkeypatch, capsys)
        errors = [line for line in err if line.startswith("error:")]  # export logs what it starts first
        assert code == 1 and errors == err[-1:] and err[-1].startswith(f"error: {path}: {message}"), (name, err)
        assert not any(line.startswith((" ", "Traceback")) for line in err), (name, err)
        assert not (root / "out").exists(), name


@pytest.mark.parametrize("stage", ["render", "export"])
@pytest.mark.parametrize("config", [HUGE, WIDE], ids=["huge", "wide"])
def test_a_config_beyond_bounds_is_refused_before_any_allocation(good, tmp_path, stage, config):
    """The command under a 4 GB address-space limit: refused in one line, where allocating the
    recorded generator would need 11 GB to 2.8 TB."""
    model = {**to_dict(ModelConfig(**TINY)), **config}
    path = resave(good, tmp_path / "g.safetensors", model=model)
    params, paths = render_setup(tmp_path, path)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    args = ["--params", str(params), *(paths if stage == "render" else export_inputs(tmp_path))]
    r = subprocess.run([sys.executable, "-m", f"tasks.{stage}", *args], cwd=tmp_path, preexec_fn=limit,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
                       capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert lines[-1].startswith(f"error: {path}: bad model config in its metadata: model")


@pytest.mark.parametrize("cfg", [
    ModelConfig(), ModelConfig(**TINY), ModelConfig(image_size=32, g_channels=32, g_blocks=4, d_channels=(32, 64, 128)),
    ModelConfig(image_size=64, g_up_channels=(96, 48, 24), d_mbstd_group=0, d_blocks=0),
], ids=["paper", "tiny", "demo", "up-channels"])
def test_the_bounds_arithmetic_is_the_networks(cfg):
    """generator_size / discriminator_size (what the bounds are checked on, without torch) equal the
    real networks': parameters, and the largest output of any layer for one sample (shapes on the
    meta device: nothing allocated)."""
    with torch.device("meta"):
        nets = Generator(cfg), Discriminator(cfg)
        largest = [0, 0]
        for i, net in enumerate(nets):
            def hook(_m, _inp, out, i=i):
                for t in out if isinstance(out, tuple) else (out,):
                    largest[i] = max(largest[i], t[0].numel())
            for m in net.modules():
                m.register_forward_hook(hook)
        z, tags = torch.zeros(2, cfg.z_dim), torch.zeros(2, cfg.n_tags)
        nets[1](nets[0](z, tags))
    params = [sum(p.numel() for p in n.parameters()) for n in nets]
    assert (params[0], largest[0]) == generator_size(cfg)
    assert (params[1], largest[1]) == discriminator_size(cfg)


@pytest.mark.parametrize("data, message", [
    ({"image_size": 2048}, "model.image_size: at most 1024, got 2048"),
    ({"g_channels": 5000}, "model.g_channels: at most 4096, got 5000"),
    ({"n_tags": 2000}, "model.n_tags: at most 1024, got 2000"),
    ({"g_blocks": 300}, "model.g_blocks: at most 256, got 300"),
    ({"d_channels": [32, 8192]}, "model.d_channels: widths at most 4096, got [32, 8192]"),
    ({"g_up_channels": [64, 64, 5000]}, "model.g_up_channels: widths at most 4096"),
    ({"image_size": 1024, "g_channels": 1024}, "model: the generator would have 2,867,082,243 parameters"),
    ({"image_size": 1024, "g_channels": 16, "g_up_channels": [16, 16, 512]},
     "model: the generator's largest feature map would hold 536,870,912 values a sample"),
    ({"image_size": 1024, "d_channels": [2048, 16]}, "model: the discriminator's largest feature map would hold"),
])
def test_model_configs_beyond_bounds_are_one_line(data, message):
    from tasks.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        build(ModelConfig, {**to_dict(ModelConfig(**TINY)), **data}, "model")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
