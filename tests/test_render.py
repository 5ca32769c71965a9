"""The render stage: sheets and their sizes, slerp, the Frechet distance on known Gaussians,
attribute accuracy, and the unavailable / available metric paths."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.config import to_dict
from tasks.config import build
from tasks.detect.dataset import read_faces
from tasks.params import Params
from tasks.render.metrics import attribute_accuracy, binarize, frechet_distance, frechet_of_features, load_tagger
from tasks.render.run import run_render
from tasks.render.sheets import load_generator, slerp
from tasks.tag.schema import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, MGM_TAGS
from tasks.train.export import export_training_data
from tasks.train.run import write_run_config
from tests.train_helpers import TINY_MODEL, make_faces, tiny_run

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def params(shared, tmp_path_factory):
    from models.training_loop import train

    root = tmp_path_factory.mktemp("render")
    f = make_faces(shared, root, n=24)
    export = root / "train" / "faces.parquet"
    export_training_data(read_faces(f["faces"]), f["crops"], f["tags"], export)
    run = tiny_run(export, root / "train", steps=3)
    train(run)
    data = {"train": {"model": to_dict(TINY_MODEL), "optim": to_dict(run.optim), "loop": to_dict(run.loop),
                      "out": {"data": str(export), "dir": str(root / "train")}},
            "render": {"grid": 3, "variations": 2, "fixed_tag_rows": 2, "interpolation_pairs": 2,
                       "interpolation_steps": 3, "eval_samples": 6, "batch": 8, "device": "cpu", "tagger": "none",
                       "out": {"samples": str(root / "samples"), "metrics": str(root / "metrics.json")}}}
    return build(Params, data)


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    s1, s2 = np.diag([1.0, 2, 3, 4, 5]), np.diag([2.0, 1, 5, 4, 0.5])
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # commuting covariances: ||mu1-mu2||^2 + sum (sqrt(a) - sqrt(b))^2, invariant under a shared rotation
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(np.diag(s1)) - np.sqrt(np.diag(s2))) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T) == pytest.approx(expected, rel=1e-8)
    # 1-D: (m1-m2)^2 + (sd1-sd2)^2; and zero between a Gaussian and itself
    assert frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(9 + 1)
    a = rng.normal(size=(6, 6))
    assert frechet_distance(mu1.tolist() + [0], a @ a.T, mu1.tolist() + [0], a @ a.T) == pytest.approx(0, abs=1e-9)
    # from samples: close to the analytic value
    x = rng.multivariate_normal(mu1, s1, 20000)
    y = rng.multivariate_normal(mu2, s2, 20000)
    assert frechet_of_features(x, y) == pytest.approx(expected, rel=0.05)


def test_slerp_keeps_norm_on_the_great_circle():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    t = torch.linspace(0, 1, 5)
    p = slerp(a.expand(5, -1), b.expand(5, -1), t)
    assert torch.allclose(p[0], a[0]) and torch.allclose(p[-1], b[0], atol=1e-6)
    assert torch.allclose(p.norm(dim=1), torch.ones(5), atol=1e-6)
    assert torch.allclose(p[2], torch.tensor([2 ** -0.5, 2 ** -0.5]), atol=1e-6)
    same = slerp(a, a, torch.tensor([0.3]))  # parallel: no division by sin(0)
    assert torch.isfinite(same).all() and torch.allclose(same, a)


def test_binarize_and_attribute_accuracy():
    n = len(MGM_TAGS)
    cond = np.zeros((2, n))
    cond[:, HAIR_COLOR_SLICE.start] = 1
    cond[:, EYE_COLOR_SLICE.start + 1] = 1
    cond[0, 13] = 1  # long_hair on the first
    probs = np.full((2, n), 0.1)
    probs[:, HAIR_COLOR_SLICE.start] = [0.4, 0.3]  # argmax wins below the threshold
    probs[1, HAIR_COLOR_SLICE.start + 1] = 0.35  # second image: the wrong hair colour
    probs[:, EYE_COLOR_SLICE.start + 1] = 0.9
    probs[0, 13] = 0.8
    probs[1, 14] = np.nan  # unknown: excluded
    pred = binarize(probs)
    assert pred[0, HAIR_COLOR_SLICE].tolist().count(1) == 1 and pred[1, 14] == -1
    acc = attribute_accuracy(cond, pred)
    assert acc["hair_color"] == 0.5 and acc["eye_color"] == 1.0
    assert acc["per_tag"]["long_hair"] == 1.0 and acc["per_tag"]["short_hair"] == 1.0
    assert 0.5 < acc["mean"] <= 1.0


def test_render_writes_every_sheet_at_the_right_size(params):
    s = run_render(params)
    samples = Path(params.render.out.samples)
    sizes = {"grid": (3 * 32, 3 * 32), "hair_colors": (2 * 32, 13 * 32), "fixed_tags": (2 * 32, 2 * 32),
             "interpolation": (3 * 32, 2 * 32)}
    for name, size in sizes.items():
        assert Image.open(samples / f"{name}.png").size == size
    sheets = sorted(p.stem for p in (samples / "attributes").glob("*.png"))
    assert sheets == sorted(MGM_TAGS)
    assert Image.open(samples / "attributes" / "blonde_hair.png").size == (2 * 32, 2 * 32)
    m = json.loads(Path(params.render.out.metrics).read_text())
    assert m["attribute_accuracy"]["available"] is False and m["attribute_accuracy"]["reason"]
    assert m["frechet_distance"]["available"] is False and m["step"] == 3
    assert "unavailable" in s.markdown()


def test_render_metrics_with_a_tagger(params, tmp_path):
    class FakeTagger:
        name = "fake"

        def probabilities(self, images):
            rng = np.random.default_rng(0)
            return rng.random((len(images), len(MGM_TAGS)))

        def features(self, images):
            return images.reshape(len(images), -1)[:, :16].astype(np.float64)

    s = run_render(params, tagger=FakeTagger())
    acc, fd = s.metrics["attribute_accuracy"], s.metrics["frechet_distance"]
    assert acc["available"] and acc["n"] == 6 and 0 <= acc["mean"] <= 1
    assert fd["available"] and fd["value"] >= 0 and fd["n_real"] == 6


def test_tagger_auto_uses_the_tag_backend_or_says_why(params, monkeypatch):
    import tasks.tag.backends as backends

    auto = replace(params, render=replace(params.render, tagger="auto"))
    m = run_render(auto).metrics["attribute_accuracy"]  # whatever the tag stage offers here (colour at least)
    assert m["available"] or m["reason"]

    def broken(_params):
        raise FileNotFoundError("models/illust2vec_tag.safetensors")

    monkeypatch.setattr(backends, "load_tagger", broken)
    tagger, reason = load_tagger(auto, "auto")
    assert tagger is None and "FileNotFoundError" in reason and "illust2vec" in reason
    m = run_render(auto).metrics
    assert not m["attribute_accuracy"]["available"] and "illust2vec" in m["frechet_distance"]["reason"]


def test_tagger_none_and_generator_round_trip(params):
    tagger, reason = load_tagger(params, "none")
    assert tagger is None and "none" in reason
    G, sampler, meta = load_generator(params.train.generator)
    assert G.cfg == TINY_MODEL and meta["step"] == "3" and sampler.n_tags == 34


def test_run_config_is_standalone(params, tmp_path):
    from models.training_loop import load_run

    path = write_run_config(params.train)
    assert load_run(path) == params.train.run_config()


def test_summary_when_the_tagger_reads_nothing_back():
    """A tagger that finds no face in the generated images (tiny demo models) is reported, not a crash."""
    from tasks.render.run import RenderSummary

    s = RenderSummary(sheets={}, metrics={"attribute_accuracy": {"available": True, "mean": None, "n": 200,
                                                                 "hair_color": None, "eye_color": None},
                                          "frechet_distance": {"available": False, "reason": "no features"}})
    assert "no attribute could be read back from the 200 generated images" in s.markdown()
