"""Scale-out: `torchrun --nproc_per_node 2 -m models.training_loop` with gloo on the CPU (a tiny
model, 48 real faces). The two ranks must stay in sync (the loop compares their parameter
digests at every checkpoint; here rank 1's digest must equal that of the weights rank 0 saved),
and a checkpoint made by 2 ranks must resume on 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.checkpoint import params_digest, split_state
from models.data import FaceData
from models.dragan import Discriminator, Generator
from tasks.artifacts.faces import read_faces
from tasks.train.export import export_training_data
from tasks.typed import to_dict
from tests.conftest import ROOT
from tests.support.train import TINY_MODEL, make_faces, tiny_run


@pytest.fixture(scope="module")
def export(shared, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    f = make_faces(shared, root)
    out = root / "train_faces.parquet"
    export_training_data(read_faces(f["faces"]), f["crops"], f["tags"], out)
    return out


def checkpoints(out: Path, run_id: str) -> list[Path]:
    return sorted((out / "runs" / run_id / "checkpoints").glob("step-*"))


def saved_digest(ckpt_dir: Path) -> str:
    """The parameter digest of the weights in a checkpoint, rebuilt as the loop's modules."""
    tensors = load_file(str(ckpt_dir / "weights.safetensors"))
    G, D, E = Generator(TINY_MODEL), Discriminator(TINY_MODEL), Generator(TINY_MODEL)
    for name, m in (("g", G), ("d", D), ("g_ema", E)):
        m.load_state_dict(split_state(tensors, name))
    return params_digest(G, D, E)


def test_two_ranks_stay_in_sync_and_resume_on_one(export, tmp_path):
    run = tiny_run(export, tmp_path / "out", steps=6, checkpoint_every=3, log_every=3)
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(to_dict(run)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "models.training_loop", "--config", str(cfg)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stderr.count("on cpu x2") == 2  # both ranks trained, as one run of world size 2
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    run_id = summary["run"]
    made = checkpoints(tmp_path / "out", run_id)
    assert [p.name for p in made] == ["step-00000000", "step-00000003", "step-00000006"]
    for ck in made:
        state = torch.load(ck / "state.pt", weights_only=True)
        assert state["world"] == 2 and len(state["rng"]["gen"]) == 2
        assert state["rng"]["gen"][0].tolist() != state["rng"]["gen"][1].tolist()  # each rank its own noise
        d0, d1 = state["params_sha256"]
        assert d0 == d1 == saved_digest(ck), ck.name  # rank 1 holds exactly the weights rank 0 saved
    assert saved_digest(made[0]) != saved_digest(made[-1])  # it did train

    one = subprocess.run([sys.executable, "-m", "models.training_loop", "--config", str(cfg), "--steps", "9"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    assert f"resuming run {run_id} from" in one.stderr and "(step 6)" in one.stderr
    assert "\r" not in one.stderr + ddp.stderr  # stderr is no terminal: no progress bar, a log of lines
    assert "checkpoint made with 2 processes, now 1: noise streams reseeded" in one.stderr
    resumed = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert resumed["run"] == run_id and resumed["resumed_from"] == 6 and resumed["step"] == 9
    assert resumed["data_fingerprint"] == summary["data_fingerprint"]
    last = checkpoints(tmp_path / "out", run_id)[-1]
    state = torch.load(last / "state.pt", weights_only=True)
    assert last.name == "step-00000009" and state["world"] == 1 and state["params_sha256"] is None
    weights = load_file(str(last / "weights.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert saved_digest(last) != saved_digest(made[-1])
    rows = (tmp_path / "out" / "plots.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["3", "6", "9"]


def test_one_rank_sees_the_global_batch_two_ranks_split(export):
    """The data plan is global: on 1 rank a step takes the faces the 2 ranks took between them,
    so a run resumed on another world size goes on through the same epoch order."""
    cpu = torch.device("cpu")
    one = FaceData(export, 32, cpu, seed=3, batch=8, threads=1)
    ranks = [FaceData(export, 32, cpu, seed=3, batch=8, rank=r, world=2, threads=1) for r in (0, 1)]
    try:
        for step in (0, 5, 11, 40):  # 48 faces, 8 a step: 40 is in epoch 6
            both = torch.cat([r.indices(step, cpu) for r in ranks])
            assert torch.equal(one.indices(step, cpu), both), step
    finally:
        for d in (one, *ranks):
            d.close()
