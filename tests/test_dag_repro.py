"""The whole DAG under `dvc repro`, as a data engineer runs it, on throwaway copies:
- two clean repros in two fresh copies give the same md5 for every out after scrape;
- a reviewer's merged false positive reaches the model: the face leaves the training data and
  training runs steps on the new data (a new run), so the generator changes;
- a changed train.optim.lr starts a new run and keeps the previous run's checkpoints;
- `dvc repro` from a plain shell, with the system's python first on PATH, still works;
- `dvc status` after a repro is clean."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from tests.project import env, make_copy, run

TINY_DAG = {
    "train": {"model": {"g_channels": 8, "g_blocks": 1, "g_up_channels": [], "d_channels": [8, 16, 32]},
              "optim": {"batch": 8},
              "loop": {"steps": 4, "checkpoint_every": 2, "log_every": 2, "threads": 1, "progress": False}},
    "render": {"eval_samples": 16, "batch": 16, "grid": 2, "variations": 2},
}
AFTER_SCRAPE = ("detect", "review", "tag", "train", "render", "export")


def lock(project) -> dict:
    return yaml.safe_load((project / "dvc.lock").read_text())


def outs(lk: dict, stage: str) -> dict[str, str]:
    return {e["path"]: e["md5"] for e in lk["stages"][stage].get("outs", [])}


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    projects = []
    for name in ("a", "b"):
        p = make_copy(tmp_path_factory.mktemp(name), TINY_DAG)
        run(["dvc", "repro"], p, timeout=900)
        projects.append(p)
    return projects


def test_two_clean_repros_give_the_same_bytes(two):
    a, b = (lock(p) for p in two)
    for stage in AFTER_SCRAPE:
        assert outs(a, stage), stage
        assert outs(a, stage) == outs(b, stage), stage
    status = run(["dvc", "status"], two[0]).stdout
    assert "changed" not in status and "frozen" not in status.lower(), status


def test_a_merged_false_positive_reaches_the_model(two):
    project = two[0]
    before = pq.read_table(project / "data/train/faces.parquet")
    metrics = json.loads((project / "data/train/metrics.json").read_text())
    gen = (project / "data/train/generator.safetensors").read_bytes()
    victim = before.column("face_id")[0].as_py()
    with open(project / "review/false_positives.csv", "a", encoding="utf-8") as f:
        f.write(f"{victim},1,tester,not a face\n")
    out = run(["dvc", "repro"], project, timeout=900).stdout
    assert "Running stage 'review'" in out and "Running stage 'train'" in out
    after = pq.read_table(project / "data/train/faces.parquet")
    assert victim not in after.column("face_id").to_pylist() and after.num_rows == before.num_rows - 1
    new = json.loads((project / "data/train/metrics.json").read_text())
    assert new["run"] != metrics["run"] and new["data_fingerprint"] != metrics["data_fingerprint"]
    assert new["resumed_from"] is None and new["step"] == 4 and new["loss_d"] is not None  # it trained
    report = json.loads((project / "reports/runs/train.json").read_text())
    assert report["steps_trained"] == 4
    assert (project / "data/train/generator.safetensors").read_bytes() != gen


def test_a_changed_lr_keeps_the_previous_run(two):
    project = two[1]
    runs = project / "data/train/runs"
    old = {p.name: sorted((q.relative_to(p), q.stat().st_size) for q in p.rglob("*") if q.is_file())
           for p in runs.iterdir()}
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("lr: 0.0001 ", "lr: 0.0002 "))
    out = run(["dvc", "repro", "train"], project, timeout=900).stdout
    assert "Running stage 'train'" in out
    now = {p.name for p in runs.iterdir()}
    assert set(old) < now and len(now) == len(old) + 1
    for name, files in old.items():  # untouched, file for file
        assert sorted((q.relative_to(runs / name), q.stat().st_size) for q in (runs / name).rglob("*")
                      if q.is_file()) == files


def test_dvc_repro_from_a_plain_shell(two):
    """`.venv/bin/dvc repro` with the system's python first on PATH: the stage finds its environment."""
    project = two[1]
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("grid: 2", "grid: 3"))
    venv_bin = os.path.dirname(sys.executable)
    e = env()
    e["PATH"] = os.pathsep.join(p for p in e["PATH"].split(os.pathsep) if p and os.path.abspath(p) != venv_bin)
    python = shutil.which("python", path=e["PATH"])
    if python is None:
        pytest.skip("no `python` outside the venv on PATH")
    r = run([os.path.join(venv_bin, "dvc"), "repro", "render"], project, env=e, timeout=900, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Traceback" not in r.stdout + r.stderr


def test_a_stage_flow_honours_params_through_dvc(two):
    """`python -m flows.render --params FILE`: FILE becomes params.yaml, DVC runs the stage and
    records FILE's values in dvc.lock; a dirty params.yaml is never overwritten."""
    project = two[0]
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(git + ["add", "-A"], project)
    run(git + ["commit", "-qm", "repro"], project)
    other = project / "other.yaml"
    other.write_text((project / "params.yaml").read_text().replace("grid: 2", "grid: 4"))
    e = env({"PREFECT_HOME": str(project / ".prefect")})
    r = run([sys.executable, "-m", "flows.render", "--params", str(other)], project, env=e, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (project / "params.yaml").read_text() == other.read_text()
    assert lock(project)["stages"]["render"]["params"]["params.yaml"]["render"]["grid"] == 4
    assert (project / "reports/runs/render.md").is_file()  # the summary the flow published
    other.write_text(other.read_text().replace("grid: 4", "grid: 5"))  # params.yaml is now dirty (uncommitted)
    r = run([sys.executable, "-m", "flows.render", "--params", str(other)], project, env=e, timeout=600, check=False)
    assert r.returncode == 1 and "uncommitted changes" in r.stderr and "Traceback" not in r.stderr
    assert "grid: 4" in (project / "params.yaml").read_text()
