"""The paper-scale GPU command (`bash scripts/gpu_paper.sh OUT`), run end to end on the CPU with
`--cpu-smoke` on 300 of the real faces: dataset, training, sheets and metrics in one folder."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tasks.artifacts.trainset import HOLDOUT, read_export
from tasks.tools.paper_run import collect
from tests.conftest import ROOT


@pytest.fixture
def params_file(shared, tmp_path) -> Path:
    """params.yaml with detect.cascade at ../shared's copy (the script's fetch may find none)."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["detect"]["cascade"] = str(shared / "models" / "lbpcascade_animeface.xml")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cpu_smoke_runs_the_whole_paper_command(shared, params_file, tmp_path):
    out = tmp_path / "paper"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    # --minutes 0: no wall-clock budget (its 1-minute default stops a loaded machine short of 20 steps)
    cmd = ["bash", "scripts/gpu_paper.sh", str(out), "--cpu-smoke", "--limit", "300", "--steps", "20",
           "--minutes", "0", "--eval-samples", "64", "--params", str(params_file)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for what in ("images/s:", "MFU", "face detectability:", "diversity:", "attribute agreement", "grid:"):
        assert what in r.stdout, (what, r.stdout)

    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "cpu-smoke" and m["device"] == "cpu" and m["model"]["image_size"] == 32
    assert m["train"]["step"] == 20 and m["train"]["steps_trained"] == 20 and m["step"] == 20
    p = m["performance"]
    assert p["images_per_s"] > 0 and p["flops_per_step"] > 1e9 and p["achieved_tflops"] > 0
    assert p["mfu"] is None and "no peak known for cpu" in p["peak"]
    assert m["samples"] == 64 and m["model_px"] == 32
    for section in ("detectability", "diversity", "memorisation"):
        assert m[section]["available"] is True, (section, m[section])
    assert m["detectability"]["real_lbpcascade"] > 0
    assert "available" in m["attributes"] and "available" in m["frechet"]
    assert m["attributes"]["available"] or m["attributes"]["reason"]
    with Image.open(out / "samples" / "grid.png") as grid:
        assert grid.size == (8 * 32, 8 * 32)
    assert (out / "samples" / "hair_colors.png").exists() and (out / "attributes.json").exists()
    assert (out / "train" / "generator.safetensors").exists()

    ds = read_export(out / "faces.parquet")
    assert len(ds.face_ids) == m["dataset"]["faces"] == 300 and ds.face_ids == sorted(ds.face_ids)
    assert 10 <= (ds.split == HOLDOUT).sum() == m["dataset"]["holdout"] < 60
    assert all(hashlib.sha256(b).hexdigest() == f for f, b in zip(ds.face_ids[:20], ds.pngs[:20]))  # files as found
    assert ds.fingerprint == m["dataset"]["fingerprint"] and (ds.attributes[:, :13] >= 0).any()
    assert pq.read_schema(out / "faces.parquet").metadata[b"moeflow.tagger"] == m["dataset"]["tagger"].encode()

    # the dataset is reused while the same images and tagger would make it
    before = (out / "faces.parquet").stat().st_mtime_ns
    again = subprocess.run(cmd + ["--prepare-only"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "is up to date" in again.stderr and "300 faces" in again.stdout
    assert (out / "faces.parquet").stat().st_mtime_ns == before


def test_collect_keeps_each_image_once_and_names_unreadable_files(shared, tmp_path, caplog):
    files = sorted((shared / "data" / "faces_train").glob("*.jpg"))[:3]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(files[0], tmp_path / "copy.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING):
        ids, images, names = collect([str(tmp_path / "*.jpg")])
    assert ids == sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
    assert [hashlib.sha256(b).hexdigest() for b in images] == ids and len(names) == 3
    assert "1 unreadable files left out" in caplog.text and "broken.jpg" in caplog.text
    assert "1 files left out as byte-identical copies" in caplog.text
    assert collect([str(tmp_path / "*.jpg")], limit=2)[0] == ids[:2]


def test_no_faces_is_one_error_line(params_file, tmp_path):
    r = subprocess.run(["bash", "scripts/gpu_paper.sh", str(tmp_path / "o"), "--cpu-smoke", "--params", str(params_file),
                        "--faces", str(tmp_path / "none" / "*.jpg")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: no face images match") and "Traceback" not in r.stderr
