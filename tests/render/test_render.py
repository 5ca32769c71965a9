"""The render stage: sheets and their sizes, slerp, the Frechet distance on known Gaussians,
and every metric section available with values or unavailable with the reason (never nulls)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.artifacts.detector import write_detector_spec
from tasks.artifacts.faces import read_faces
from tasks.artifacts.tagger import write_tagger_spec
from tasks.artifacts.tags import MGM_TAGS
from tasks.params.detect import DetectConfig
from tasks.params.render import RenderConfig
from tasks.params.tag import TagConfig
from tasks.params.train import RunConfig
from tasks.render.metrics import frechet_distance, frechet_of_features, load_tagger
from tasks.render.report import metric_lines
from tasks.render.run import run_render
from tasks.render.sheets import load_sampled, slerp
from tasks.train.export import export_training_data
from tasks.train.run import write_run_config
from tasks.typed import build
from tests.support.train import TINY_MODEL, make_faces, tiny_run

torch.set_num_threads(1)


@dataclass(frozen=True)
class Setup:
    """The render section and the paths dvc.yaml would hand the stage, over a tiny trained run."""

    render: RenderConfig
    data: str  # the training dataset
    tagger: str  # the tag stage's tagger spec (the colour tagger)
    detector: str  # the detect stage's detector spec (lbpcascade with the shared cascade)
    run: RunConfig

    def __call__(self, **kw):
        """run_render on this setup (render section fields replaced by `kw`)."""
        tagger = kw.pop("tagger_obj", None)
        return run_render(replace(self.render, **kw), self.data, self.tagger, self.detector, tagger=tagger)


@pytest.fixture(scope="module")
def params(shared, tmp_path_factory):
    from models.training_loop import train

    root = tmp_path_factory.mktemp("render")
    f = make_faces(shared, root, n=48)
    export = root / "train" / "faces.parquet"
    export_training_data(read_faces(f["faces"]), f["crops"], f["tags"], export, holdout=0.3)
    run = tiny_run(export, root / "train", steps=3)
    train(run)
    write_detector_spec(root / "detector.json", DetectConfig(cascade=str(shared / "models" / "lbpcascade_animeface.xml")),
                        None)
    write_tagger_spec(root / "tagger.json", TagConfig(), "color", "test: the colour tagger")
    render = build(RenderConfig, {
        "generator": str(root / "train" / "generator.safetensors"), "grid": 3, "variations": 2, "fixed_tag_rows": 2,
        "interpolation_pairs": 2, "interpolation_steps": 3, "eval_samples": 12, "batch": 8, "device": "cpu",
        "tagger": "none", "out": {"samples": str(root / "samples"), "metrics": str(root / "metrics.json"),
                                  "summary": str(root / "summary.json"), "attributes": str(root / "attributes.json")}},
        "render")
    return Setup(render, str(export), str(root / "tagger.json"), str(root / "detector.json"), run)


def no_nulls_when_available(m: dict) -> None:
    for name in ("detectability", "diversity", "memorisation", "attributes", "frechet"):
        section = m[name]
        if section["available"]:
            assert None not in section.values(), (name, section)
        else:
            assert set(section) == {"available", "reason"} and section["reason"], (name, section)


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


def test_render_writes_every_sheet_at_the_right_size(params):
    s = params()
    samples = Path(params.render.out.samples)
    sizes = {"grid": (3 * 32, 3 * 32), "hair_colors": (2 * 32, 13 * 32), "fixed_tags": (2 * 32, 2 * 32),
             "interpolation": (3 * 32, 2 * 32)}
    for name, size in sizes.items():
        assert Image.open(samples / f"{name}.png").size == size
    sheets = sorted(p.stem for p in (samples / "attributes").glob("*.png"))
    assert sheets == sorted(MGM_TAGS)
    assert Image.open(samples / "attributes" / "blonde_hair.png").size == (2 * 32, 2 * 32)
    m = json.loads(Path(params.render.out.summary).read_text())
    assert m["step"] == 3 and m["samples"] == 12 and m["model_px"] == 32
    no_nulls_when_available(m)
    d = m["detectability"]
    assert d["available"] and d["detector"] == "lbpcascade" and 0 <= d["lbpcascade"] <= 1 and d["real_lbpcascade"] > 0
    assert "animeface" in d  # both of the detect stage's detectors
    assert m["diversity"]["available"] and m["diversity"]["real"] > 0
    assert m["memorisation"]["available"] and m["memorisation"]["n_heldout"] >= 10
    assert m["attributes"] == {"available": False, "reason": "render.tagger is none"}
    # the DVC metric: one number per metric, null (left out of `dvc metrics show`) where unavailable
    assert json.loads(Path(params.render.out.metrics).read_text()) == {
        "step": 3, "detectability": d["ratio"], "diversity": m["diversity"]["ratio"],
        "memorisation": m["memorisation"]["ratio"], "attributes": None, "frechet": None}
    assert "unavailable (render.tagger is none)" in s.markdown() and "face detectability" in s.markdown()


def test_render_metrics_with_a_tagger(params, tmp_path):
    class FakeTagger:
        name = "fake"

        def probabilities(self, images):
            rng = np.random.default_rng(0)
            return rng.random((len(images), len(MGM_TAGS)))

        def features(self, images):
            return images.reshape(len(images), -1)[:, :16].astype(np.float64)

    s = params(tagger_obj=FakeTagger())
    acc, fd = s.metrics["attributes"], s.metrics["frechet"]
    assert acc["available"] and acc["n"] == 12 and 0 <= acc["mean"] <= 1 and 0 <= acc["mean_ceiling"] <= 1
    assert fd["available"] and fd["value"] >= 0 and fd["n_real"] == 12
    no_nulls_when_available(s.metrics)
    detail = json.loads(Path(params.render.out.attributes).read_text())
    assert detail["tagger"] == "fake" and set(detail["attributes"]) >= {"hair_color", "eye_color", "blush"}


def test_a_failing_metric_says_why(params, monkeypatch):
    from tasks.render import quality

    def broken(*a, **k):
        raise RuntimeError("cdist ran out of memory")

    monkeypatch.setattr(quality, "diversity", broken)
    m = params().metrics
    assert m["diversity"] == {"available": False, "reason": "RuntimeError: cdist ran out of memory"}
    assert m["detectability"]["available"]  # the others are still computed


def test_tagger_auto_uses_the_tag_backend_or_says_why(params, monkeypatch):
    import tasks.taggers.backends as backends

    m = params(tagger="auto").metrics["attributes"]  # the tag stage's tagger (its spec: colour)
    assert m["available"] or m["reason"]

    def broken(_cfg):
        raise FileNotFoundError("models/illust2vec_tag.safetensors")

    monkeypatch.setattr(backends, "load_tagger", broken)
    tagger, cfg, reason = load_tagger(params.tagger, "auto")
    assert tagger is None and cfg.backend == "color" and "FileNotFoundError" in reason and "illust2vec" in reason
    m = params(tagger="auto").metrics
    assert not m["attributes"]["available"] and "illust2vec" in m["frechet"]["reason"]


def test_tagger_none_and_generator_round_trip(params):
    tagger, cfg, reason = load_tagger(params.tagger, "none")
    assert tagger is None and cfg is None and "none" in reason
    G, sampler, meta = load_sampled(params.run.generator)
    assert G.cfg == TINY_MODEL and meta["step"] == "3" and sampler.n_tags == 34


def test_run_config_is_standalone(params, tmp_path):
    from models.training_loop import load_run

    run = replace(params.run, preset="paper").resolved()
    path = write_run_config(run)
    assert load_run(path) == run and run.loss.lambda_adv == 34.0


def test_metric_lines_say_what_is_unavailable():
    off = {"available": False, "reason": "no tagger"}
    lines = metric_lines({"model_px": 32, "detectability": off, "diversity": off, "memorisation": off,
                          "attributes": off, "frechet": off})
    assert len(lines) == 5 and all(line.endswith("unavailable (no tagger)") for line in lines)
