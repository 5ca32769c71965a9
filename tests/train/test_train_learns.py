"""A learning test, not a timing test: a short CPU training run on real face crops draws
samples the detect stage's cascade finds faces in, where a random generator's draw none.
(How good a longer run gets is the demo's and bench/'s business, not this test's.)"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from models.dragan import Generator
from models.training_loop import GENERATOR, train
from tasks.artifacts.trainset import export_schema, split_of
from tasks.detectors import LbpCascade, read_cascade
from tasks.params.train import LoopConfig, LossConfig, ModelConfig, OptimConfig, RunConfig, RunOut
from tasks.render import quality as Q
from tasks.render.sheets import generate, load_sampled

FACES = 3000
MODEL = ModelConfig(image_size=32, g_channels=128, g_blocks=2, g_up_channels=(64, 32, 32), d_channels=(32, 64, 128),
                    d_blocks=1)
STEPS = 600


def dataset(shared: Path, out: Path) -> Path:
    files = sorted((shared / "data" / "faces_train").glob("*.jpg"))[:FACES]
    rows = {"face_id": [], "png": [], "attributes": [], "split": []}
    for f in files:
        buf = io.BytesIO()
        Image.open(f).convert("RGB").resize((32, 32), Image.BICUBIC).save(buf, "PNG")
        rows["face_id"].append(f.stem)
        rows["png"].append(buf.getvalue())
        rows["attributes"].append([-1] * 34)
        rows["split"].append(split_of(f.stem, 0.0))
    pq.write_table(pa.table(rows, schema=export_schema("test")), out)
    return out


@pytest.mark.timeout(900)  # ~2 minutes on 2 idle cores; more when they are shared
def test_a_short_cpu_run_draws_detectable_faces(shared, tmp_path):
    data = dataset(shared, tmp_path / "faces.parquet")
    run = RunConfig(out=RunOut(data=str(data), dir=str(tmp_path / "run")), model=MODEL, loss=LossConfig(),
                    optim=OptimConfig(batch=32, lr=1e-4),  # the measured short-run config
                    loop=LoopConfig(steps=STEPS, checkpoint_every=STEPS, log_every=100, progress=False, device="cpu"))
    train(run)
    xml, _ = read_cascade(shared / "models" / "lbpcascade_animeface.xml")
    lbp = Q.NamedDetector("lbpcascade", LbpCascade(xml, 1.1, 5, 24).detect)
    G, sampler, _ = load_sampled(tmp_path / "run" / GENERATOR)
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(200, 128, generator=g), sampler.sample(200, g)
    trained = Q.detect_share(generate(G, z, c), lbp, 128)
    torch.manual_seed(0)
    random = Q.detect_share(generate(Generator(MODEL).eval(), z, c), lbp, 128)
    # random weights draw no face (0 of 200); pixel-shuffled faces score 0 too (tests/render/test_quality.py)
    assert random <= 0.02 and trained >= random + 0.05, (trained, random)
