"""The train stage: networks, losses, gradient penalty, sampler, export, determinism,
SIGKILL-and-resume exactness and NaN recovery (tiny models on CPU)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from models import loss as L
from models.conditioning import TagSampler, tag_frequencies
from models.dragan import Discriminator, Generator
from models.training_loop import GENERATOR, PLOTS, train
from tasks.artifacts.faces import read_faces
from tasks.artifacts.tags import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, INDEPENDENT_SLICE
from tasks.errors import ConfigError
from tasks.params.all import Params
from tasks.params.train import LossConfig, ModelConfig, OptimConfig, RunConfig
from tasks.train.export import export_training_data
from tasks.typed import build, to_dict
from tests.conftest import ROOT
from tests.support.train import TINY_MODEL, make_faces, random_attributes, tiny_run

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def export(shared, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    f = make_faces(shared, root)
    out = root / "train_faces.parquet"
    s = export_training_data(read_faces(f["faces"]), f["crops"], f["tags"], out)
    assert s.faces == 48 and s.untagged == 0
    return out


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "runs").iterdir() if p.is_dir())


def weights(out: Path, run: str | None = None) -> dict[str, torch.Tensor]:
    run = run or json.loads((out / "summary.json").read_text())["run"]
    ck = out / "runs" / run / "checkpoints"
    d = json.loads((ck / "latest.json").read_text())["dir"]
    return load_file(str(ck / d / "weights.safetensors"))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_paper_sized_shapes():
    cfg = ModelConfig()
    G, D = Generator(cfg), Discriminator(cfg)
    z, c = torch.randn(2, 128), torch.zeros(2, 34)
    with torch.no_grad():
        x = G(z, c)
        logit, cls = D(x)
    assert x.shape == (2, 3, 128, 128) and x.abs().max() <= 1
    assert logit.shape == (2,) and cls.shape == (2, 34)
    assert len(G.blocks) == 16 and G.fc.out_features == 64 * 16 * 16


def test_tiny_shapes_and_finite_losses():
    G, D = Generator(TINY_MODEL), Discriminator(TINY_MODEL)
    z, c = torch.randn(4, 16), TagSampler.from_attributes(random_attributes(20)).sample(4)
    fake = G(z, c)
    assert fake.shape == (4, 3, 32, 32)
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    tags, known = c.clone(), torch.ones_like(c)
    ld, pd = L.discriminator_loss(D, real, fake, tags, known, torch.rand_like(real), LossConfig())
    lg, pg = L.generator_loss(D, fake, c, LossConfig())
    for v in [ld, lg, *pd.values(), *pg.values()]:
        assert torch.isfinite(v).all()
    ld.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())


def test_gradient_penalty_matches_finite_differences():
    torch.manual_seed(0)
    D = Discriminator(ModelConfig(image_size=8, g_channels=4, g_blocks=0, d_channels=(4, 8), d_blocks=1,
                                  d_mbstd_group=0)).double()  # per-sample gradients: no cross-sample feature
    x, u = torch.randn(3, 3, 8, 8, dtype=torch.float64), torch.rand(3, 3, 8, 8, dtype=torch.float64)
    gp, norms = L.gradient_penalty(D, x, u, 0.5)
    xp = L.perturb(x, u, 0.5)
    eps, fd = 1e-6, torch.zeros(3, 3 * 8 * 8, dtype=torch.float64)
    with torch.no_grad():
        for j in range(3 * 8 * 8):
            d = torch.zeros(3 * 8 * 8, dtype=torch.float64)
            d[j] = eps
            d = d.view(1, 3, 8, 8)
            fd[:, j] = (D(xp + d)[0] - D(xp - d)[0]) / (2 * eps)
    assert torch.allclose(norms, fd.norm(dim=1), rtol=1e-6, atol=1e-8)
    assert torch.allclose(gp, ((fd.norm(dim=1) - 1) ** 2).mean(), rtol=1e-6)
    gp.backward()  # differentiable w.r.t. D's weights (double backward)
    assert all(p.grad is not None for p in D.features.parameters())


def test_perturbation_is_scaled_by_batch_std():
    x, u = torch.randn(4, 3, 8, 8) * 3, torch.rand(4, 3, 8, 8)
    assert torch.allclose(L.perturb(x, u, 0.5) - x, 0.5 * u * x.std(), atol=1e-5)


def test_tag_sampler_follows_the_data():
    a = random_attributes(4000, seed=1, unknown=0.0)
    a[:, HAIR_COLOR_SLICE] = 0
    a[:, HAIR_COLOR_SLICE.start + 2] = 1  # every face has the third hair colour
    a[:100, INDEPENDENT_SLICE.start] = -1  # unknowns do not count
    freqs = tag_frequencies(a)
    s = TagSampler(freqs)
    g = torch.Generator().manual_seed(0)
    c = s.sample(20000, g)
    for sl in (HAIR_COLOR_SLICE, EYE_COLOR_SLICE):
        assert torch.all(c[:, sl].sum(1) == 1)  # one-hot groups
    assert torch.all(c[:, HAIR_COLOR_SLICE.start + 2] == 1)
    p = (a[100:, INDEPENDENT_SLICE.start] == 1).mean()
    assert abs(c[:, INDEPENDENT_SLICE.start].mean().item() - p) < 0.02
    eye = np.bincount(a[:, EYE_COLOR_SLICE].argmax(1), minlength=10) / len(a)
    assert np.abs(c[:, EYE_COLOR_SLICE].mean(0).numpy() - eye).max() < 0.02


def test_params_section_is_strict():
    p = build(Params, {"train": {"model": {"image_size": 64}, "loop": {"device": "cpu"}}})
    assert p.train.model.image_size == 64 and p.train.resolved().loop.device == "cpu"
    assert build(Params, to_dict(p)) == p
    with pytest.raises(ConfigError, match="unknown key train.model.size"):
        build(Params, {"train": {"model": {"size": 32}}})
    with pytest.raises(ConfigError, match="train.model.image_size: expected a multiple of 8"):
        build(Params, {"train": {"model": {"image_size": 30}}})
    with pytest.raises(ConfigError, match="train.model.d_channels: 6 stride-2 stages shrink 32 px below 1"):
        build(Params, {"train": {"model": {"image_size": 32}}})
    with pytest.raises(ConfigError, match="train.optim.batch: expected an integer"):
        build(Params, {"train": {"optim": {"batch": "64"}}})
    with pytest.raises(ConfigError, match="train.loop.device"):
        build(Params, {"train": {"loop": {"device": "tpu"}}})


def test_determinism_with_a_seed(export, tmp_path):
    r1 = train(tiny_run(export, tmp_path / "a", steps=4))
    train(tiny_run(export, tmp_path / "b", steps=4))
    train(replace(tiny_run(export, tmp_path / "c", steps=4), loop=replace(tiny_run(export, "", 4).loop, seed=1)))
    assert r1["step"] == 4 and r1["nan_recoveries"] == 0 and np.isfinite(r1["loss_d"])
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert not torch.equal(weights(tmp_path / "a")["g.fc.weight"], weights(tmp_path / "c")["g.fc.weight"])
    assert (tmp_path / "a" / GENERATOR).exists() and (tmp_path / "a" / "metrics.json").exists()
    rows = (tmp_path / "a" / PLOTS).read_text().splitlines()
    assert rows[0].startswith("step,loss_d,loss_g") and [r.split(",")[0] for r in rows[1:]] == ["3", "4"]


def _cli(cfg_path: Path) -> list[str]:
    return [sys.executable, "-m", "models.training_loop", "--config", str(cfg_path)]


def test_sigkill_and_resume_is_bit_exact(export, tmp_path):
    steps = 40
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("full", "killed"):
        run = tiny_run(export, tmp_path / name, steps=steps, checkpoint_every=2, log_every=2, progress=True)
        (tmp_path / f"{name}.json").write_text(json.dumps(to_dict(run)))
    subprocess.run(_cli(tmp_path / "full.json"), cwd=ROOT, env=env, check=True, capture_output=True)

    proc = subprocess.Popen(_cli(tmp_path / "killed.json"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    run_id = json.loads((tmp_path / "full" / "summary.json").read_text())["run"]  # same identity
    latest = tmp_path / "killed" / "runs" / run_id / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and json.loads(latest.read_text())["step"] >= 4:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = json.loads(latest.read_text())["step"]
    assert 4 <= killed_at < steps

    r = subprocess.run(_cli(tmp_path / "killed.json"), cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resuming run {run_id} from" in r.stderr
    # progress: true, but stderr is no terminal: a log line per log window, no bar
    assert f"step {steps}/{steps}: loss_d" in r.stderr and "\r" not in r.stderr
    assert_same(weights(tmp_path / "full"), weights(tmp_path / "killed"))
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["resumed_from"] >= killed_at
    assert (tmp_path / "full" / PLOTS).read_text() == (tmp_path / "killed" / PLOTS).read_text()


def test_nan_loss_restores_the_checkpoint_and_lowers_lr(export, tmp_path, monkeypatch, caplog):
    real_loss, calls = L.generator_loss, {"n": 0}

    def flaky(*a, **k):
        total, parts = real_loss(*a, **k)
        calls["n"] += 1
        if calls["n"] == 5:  # step 5: poison the loss (and so the weights)
            total = total * float("nan")
            parts = {**parts, "loss_g": parts["loss_g"] * float("nan")}
        return total, parts

    monkeypatch.setattr(L, "generator_loss", flaky)
    caplog.set_level(logging.WARNING, "models.training_loop")
    r = train(tiny_run(export, tmp_path / "n", steps=6, checkpoint_every=3, log_every=3))
    assert r["step"] == 6 and r["nan_recoveries"] == 1 and r["lr"] == pytest.approx(OptimConfig().lr / 2)
    assert f"restored the checkpoint at step 3, lr lowered to {OptimConfig().lr / 2:g}" in caplog.text
    w = weights(tmp_path / "n")
    assert all(torch.isfinite(v.float()).all() for v in w.values())
    steps = [ln.split(",")[0] for ln in (tmp_path / "n" / PLOTS).read_text().splitlines()[1:]]
    assert steps == ["3", "6"]


def test_a_param_change_is_a_new_run_and_keeps_the_old_one(export, tmp_path, caplog):
    """`dvc exp run -S train.optim.lr=...`: a new run directory; the old run's checkpoints stay."""
    run = tiny_run(export, tmp_path / "r", steps=2)
    first = train(run)
    old = weights(tmp_path / "r")
    changed = replace(run, optim=replace(run.optim, lr=run.optim.lr / 2))
    caplog.set_level(logging.INFO, "models.training_loop")
    result = train(changed)
    assert result["resumed_from"] is None and result["step"] == 2 and result["run"] != first["run"]
    assert f"optim.lr {run.optim.lr} -> {run.optim.lr / 2}" in caplog.text and "earlier runs' checkpoints stay" in caplog.text
    assert_same(weights(tmp_path / "r", first["run"]), old)  # untouched
    assert train(changed)["resumed_from"] == 2  # that new run resumes as usual
    assert train(run)["resumed_from"] == 2 and train(run)["run"] == first["run"]  # and so does the old one


def test_keep_runs_prunes_only_the_oldest(export, tmp_path):
    run = tiny_run(export, tmp_path / "r", steps=1, keep_runs=2)
    ids = [train(replace(run, loop=replace(run.loop, seed=s)))["run"] for s in (1, 2, 3)]
    assert [p.name for p in run_dirs(tmp_path / "r")] == sorted(ids[1:])


def test_a_complete_run_reports_its_losses_without_training(export, tmp_path):
    """dvc repro reruns train after a code change: a finished run re-exports the same generator
    and still reports the losses of its last window (never nulls)."""
    run = tiny_run(export, tmp_path / "r", steps=3)
    first = train(run)
    gen = (tmp_path / "r" / GENERATOR).read_bytes()
    again = train(run)
    assert again["steps_trained"] == 0 and again["resumed_from"] == 3
    assert all(again[k] == first[k] for k in ("loss_d", "loss_g", "gp")) and first["loss_d"] is not None
    assert (tmp_path / "r" / GENERATOR).read_bytes() == gen
    m = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert m["loss_g"] == first["loss_g"] and "wall_s" not in m and "images_per_s" not in m
    # the DVC metric: the summary's headline numbers only
    headline = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert headline == {k: m[k] for k in ("step", "faces", "loss_d", "loss_g")}


def test_the_tag_backend_and_why_reach_the_training_summary(shared, export, tmp_path):
    """tags.parquet says which backend ran and why; the training dataset and summary.json carry it on."""
    import pyarrow.parquet as pq

    f = make_faces(shared, tmp_path / "faces", n=24)
    t = pq.read_table(f["tags"])
    why = "auto: no tagger weights (default paths absent)"
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, b"moeflow.backend": b"color",
                                              b"moeflow.backend_reason": why.encode()}), f["tags"])
    data = tmp_path / "train_faces.parquet"
    s = export_training_data(read_faces(f["faces"]), f["crops"], f["tags"], data)
    assert (s.tagger, s.tagger_reason) == ("color", why)
    meta = pq.read_schema(data).metadata
    assert meta[b"moeflow.tagger"] == b"color" and meta[b"moeflow.tagger_reason"] == why.encode()
    train(tiny_run(data, tmp_path / "r", steps=1))
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert (summary["tagger"], summary["tagger_reason"]) == ("color", why)
    # a dataset whose tags file recorded no backend says so (null), it does not guess
    train(tiny_run(export, tmp_path / "unrecorded", steps=1))
    unrecorded = json.loads((tmp_path / "unrecorded" / "summary.json").read_text())
    assert unrecorded["tagger"] is None and unrecorded["tagger_reason"] is None


def test_new_data_is_a_new_run(shared, export, tmp_path):
    """Another training dataset (a reviewer's merge, re-tagging, new images) never resumes the old run."""
    from tasks.train.export import export_training_data

    f = make_faces(shared, tmp_path / "other", n=40)
    other = tmp_path / "other.parquet"
    export_training_data(read_faces(f["faces"]), f["crops"], f["tags"], other)
    a = train(tiny_run(export, tmp_path / "r", steps=2))
    b = train(tiny_run(other, tmp_path / "r", steps=2))
    assert a["run"] != b["run"] and b["resumed_from"] is None and b["steps_trained"] == 2
    assert a["data_fingerprint"] != b["data_fingerprint"]


def test_ema_ramp_up():
    from models.training_loop import Trainer

    t = Trainer.__new__(Trainer)
    t.run = replace(tiny_run(Path("x"), Path("y")), optim=OptimConfig(batch=64, ema_decay=0.999, ema_rampup=0.05))
    betas = [t.ema_beta(s) for s in (0, 10, 100, 1000, 100_000)]
    assert betas[0] < 1e-5  # the first steps: the EMA is G itself, not its random initialisation
    assert betas == sorted(betas) and betas[-1] == 0.999  # rises to ema_decay, never above
    # half-life = 5% of the images seen: at step 1,000 (64k images) 3,200 images = 50 steps
    assert betas[3] == pytest.approx(0.5 ** (1 / 50.05), rel=1e-9)
    t.run = replace(t.run, optim=OptimConfig(batch=64, ema_decay=0.999, ema_rampup=0.0))
    assert t.ema_beta(0) == 0.999  # no ramp-up: 0.999^300 = 74% of the initialisation left at step 300


def test_generator_tag_loss_ignores_tags_the_data_never_knows():
    torch.manual_seed(0)
    D = Discriminator(TINY_MODEL)
    fake = torch.rand(4, 3, 32, 32) * 2 - 1
    cond = TagSampler.from_attributes(random_attributes(20)).sample(4)
    mask = torch.ones(34)
    mask[HAIR_COLOR_SLICE.stop:EYE_COLOR_SLICE.start] = 0  # the 11 non-colour tags: unknown everywhere
    _, parts = L.generator_loss(D, fake, cond, LossConfig(), mask)
    with torch.no_grad():
        _, logits = D(fake)
    poisoned = logits.clone()
    poisoned[:, INDEPENDENT_SLICE] += 100.0  # whatever D's untrained head says there ...
    D2 = lambda x: (D(x)[0], poisoned)  # noqa: E731
    _, parts2 = L.generator_loss(D2, fake, cond, LossConfig(), mask)
    assert parts2["cls_fake"] == pytest.approx(parts["cls_fake"].item(), rel=1e-6)  # ... costs G nothing
    _, unmasked = L.generator_loss(D2, fake, cond, LossConfig())
    assert unmasked["cls_fake"] > parts["cls_fake"] + 100


def test_paper_preset():
    p = build(Params, {"train": {"preset": "paper"}})
    run = p.train.resolved()
    assert run.preset == "paper" and run.resolved() == run  # applying it again changes nothing
    assert (run.loss.lambda_adv, run.loss.lambda_gp, run.optim.lr, run.optim.lr_d) == (34.0, 0.5, 2e-4, 2e-4)
    d = build(Params, {}).train.resolved()
    assert (d.loss.lambda_adv, d.loss.lambda_gp, d.optim.lr, d.optim.lr_d) == (1.0, 0.3, 1.5e-4, 4e-4)
    with pytest.raises(ConfigError, match="train.preset"):
        build(Params, {"train": {"preset": "fast"}})


def test_run_train_exports_reviewed_faces_and_trains(shared, tmp_path):
    from tasks.artifacts.reviewed import write_reviewed
    from tasks.train.run import run_train

    f = make_faces(shared, tmp_path, n=16)
    faces = read_faces(f["faces"])
    fp = faces.column("face_id")[0].as_py()  # a false positive the review stage left out
    passed = faces.filter(pa.array([fid != fp for fid in faces.column("face_id").to_pylist()]))
    write_reviewed(tmp_path / "reviewed.parquet", passed, ["unreviewed"] * passed.num_rows)
    run = tiny_run(Path("unused"), tmp_path / "train", steps=2)
    cfg = build(RunConfig, {"model": to_dict(TINY_MODEL), "optim": to_dict(run.optim), "loop": to_dict(run.loop),
                            "out": {"data": str(tmp_path / "train" / "faces.parquet"), "dir": str(tmp_path / "train")}},
                "train")
    s = run_train(cfg, str(tmp_path / "reviewed.parquet"), str(f["crops"]), str(f["tags"]))
    assert s.export.faces == 15 and s.export.reviewed == 15 and s.result["step"] == 2
    assert fp not in pq.read_table(tmp_path / "train" / "faces.parquet").column("face_id").to_pylist()
    assert (tmp_path / "train" / "run.json").exists() and "| loss_d |" in s.markdown()


def test_streaming_loader_matches_the_cache(export, tmp_path):
    train(tiny_run(export, tmp_path / "cached", steps=3))
    train(tiny_run(export, tmp_path / "streamed", steps=3, cache_gb=0.0, loader_threads=2))
    assert_same(weights(tmp_path / "cached"), weights(tmp_path / "streamed"))


def test_resume_without_the_plots_file_still_writes_it(export, tmp_path):
    """DVC deletes non-persistent outs before a rerun; a resumed run must still leave plots.csv."""
    run = tiny_run(export, tmp_path / "r", steps=2)
    train(run)
    plots = tmp_path / "r" / "plots.csv"
    before = plots.read_text()
    plots.unlink()
    assert train(run)["resumed_from"] == 2
    assert plots.read_text() == before and before.startswith("step,")
