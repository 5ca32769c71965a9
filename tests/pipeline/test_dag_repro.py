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
import re
import shutil
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tasks.dag import load_dag
from tests.support.project import TINY_DAG, env, make_copy, run

AFTER_SCRAPE = ("detect", "review", "tag", "release", "train", "render", "export")


def set_param(project, key: tuple[str, ...], value) -> None:
    path = project / "params.yaml"
    data = yaml.safe_load(path.read_text())
    node = data
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


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


def test_a_tag_only_change_reruns_tag_and_what_follows_never_what_comes_before(two):
    """The floor plan at work: a tag-only module and a tag-only param make `dvc status` name the tag
    stage alone, and `dvc repro` rerun tag and the stages after it, none before it."""
    project = two[0]
    with open(project / "tasks/tag/summary.py", "a", encoding="utf-8") as f:
        f.write("# a tag-only edit\n")
    status = run(["dvc", "status"], project).stdout
    assert [line[:-1] for line in status.splitlines() if line and not line[0].isspace()] == ["tag"], status
    set_param(project, ("tag", "threshold"), 0.3)
    with open(project / "tasks/taggers/colors.py", "a", encoding="utf-8") as f:
        f.write("# a tagger-only edit (shared by tag and render)\n")
    status = run(["dvc", "status"], project).stdout
    assert {line[:-1] for line in status.splitlines() if line and not line[0].isspace()} == {"tag", "render"}, status
    out = run(["dvc", "repro"], project, timeout=900).stdout
    ran = re.findall(r"Running stage '(\w+)'", out)
    assert ran[0] == "tag" and not set(ran) & {"fetch", "scrape", "detect", "review"}, ran
    assert {"release", "train", "render"} <= set(ran), ran  # the tags changed: what reads them reruns
    assert "changed" not in run(["dvc", "status"], project).stdout


def test_dvc_metrics_show_is_a_readable_table(two):
    """`dvc metrics show`: a row per metrics file and a column per headline number, nothing but
    numbers; the per-tag, per-reason and per-detector detail lives in files of its own (DVC outs)."""
    shown = run(["dvc", "metrics", "show"], two[0]).stdout.splitlines()
    header, rows = shown[0].split(), [line.split() for line in shown[1:]]
    assert [r[0] for r in rows] == [m for s in load_dag(two[0]).values() for m in s.metrics]
    assert len(header) - 1 <= 22 and max(map(len, shown)) <= 250, "\n".join(shown)
    for r in rows:
        assert len(r) == len(header), r  # one cell per column: no value with a space in it
        for cell in r[1:]:
            assert cell in ("-", "True", "False") or re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", cell), (r[0], cell)


def test_a_merged_false_positive_reaches_the_model(two):
    project = two[0]
    before = pq.read_table(project / "data/train/faces.parquet")
    metrics = json.loads((project / "data/train/summary.json").read_text())
    gen = (project / "data/train/generator.safetensors").read_bytes()
    victim = before.column("face_id")[0].as_py()
    with open(project / "review/false_positives.csv", "a", encoding="utf-8") as f:
        f.write(f"{victim},1,tester,not a face\n")
    out = run(["dvc", "repro"], project, timeout=900).stdout
    assert "Running stage 'review'" in out and "Running stage 'train'" in out
    after = pq.read_table(project / "data/train/faces.parquet")
    assert victim not in after.column("face_id").to_pylist() and after.num_rows == before.num_rows - 1
    new = json.loads((project / "data/train/summary.json").read_text())
    assert new["run"] != metrics["run"] and new["data_fingerprint"] != metrics["data_fingerprint"]
    assert new["resumed_from"] is None and new["step"] == 4 and new["loss_d"] is not None  # it trained
    tags = json.loads((project / "data/tags/summary.json").read_text())  # the backend that made the tags, and why
    assert (new["tagger"], new["tagger_reason"]) == (tags["backend"], tags["backend_reason"]) and new["tagger"]
    report = json.loads((project / "reports/runs/train.json").read_text())
    assert report["steps_trained"] == 4
    assert report["peak_rss_mb"] > 50 and report["workers_peak_rss_mb"] >= 0  # the stage's own memory (bench/scale.py)
    review = json.loads((project / "reports/runs/review.json").read_text())
    assert review["peak_rss_mb"] > 50
    assert (project / "data/train/generator.safetensors").read_bytes() != gen


def test_a_changed_lr_keeps_the_previous_run(two):
    project = two[1]
    runs = project / "data/train/runs"
    old = {p.name: sorted((q.relative_to(p), q.stat().st_size) for q in p.rglob("*") if q.is_file())
           for p in runs.iterdir()}
    set_param(project, ("train", "optim", "lr"), 0.0002)
    out = run(["dvc", "repro", "train"], project, timeout=900).stdout
    assert "Running stage 'train'" in out
    now = {p.name for p in runs.iterdir()}
    assert set(old) < now and len(now) == len(old) + 1
    for name, files in old.items():  # untouched, file for file
        assert sorted((q.relative_to(runs / name), q.stat().st_size) for q in (runs / name).rglob("*")
                      if q.is_file()) == files


def test_dvc_repro_from_a_plain_shell(two):
    """`.venv/bin/dvc repro` from a shell whose `python` is not the project's: the stage stops with one
    line saying to activate the environment (nothing re-executes the interpreter); activated, it runs."""
    project = two[1]
    venv_bin = os.path.dirname(sys.executable)
    e = env()
    e["PATH"] = os.pathsep.join(p for p in e["PATH"].split(os.pathsep) if p and os.path.abspath(p) != venv_bin)
    if shutil.which("python", path=e["PATH"]) is None:
        pytest.skip("no `python` outside the venv on PATH")
    dvc = [os.path.join(venv_bin, "dvc"), "repro", "render"]
    set_param(project, ("render", "grid"), 3)
    r = run(dvc, project, env=e, timeout=900, check=False)  # this copy has no .venv of its own
    assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr
    assert "activate the project's environment" in r.stdout + r.stderr
    (project / ".venv").symlink_to(Path(venv_bin).parent)  # as `make demo` leaves it: still no re-exec
    r = run(dvc, project, env=e, timeout=900, check=False)
    assert r.returncode != 0 and "activate the project's environment" in r.stdout + r.stderr
    e["PATH"] = os.pathsep.join([str(project / ".venv" / "bin"), e["PATH"]])  # `source .venv/bin/activate`
    r = run(dvc, project, env=e, timeout=900, check=False)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert lock(project)["stages"]["render"]["params"]["params.yaml"]["render"]["grid"] == 3


def test_a_stage_flow_honours_params_through_dvc(two):
    """`python -m flows.render --params FILE`: FILE becomes params.yaml, DVC runs the stage and
    records FILE's values in dvc.lock; a dirty params.yaml is never overwritten."""
    project = two[0]
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(git + ["add", "-A"], project)
    run(git + ["commit", "-qm", "repro"], project)
    other = project / "other.yaml"
    data = yaml.safe_load((project / "params.yaml").read_text())
    data["render"]["grid"] = 4
    other.write_text(yaml.safe_dump(data, sort_keys=False))
    e = env({"PREFECT_HOME": str(project / ".prefect")})
    r = run([sys.executable, "-m", "flows.render", "--params", str(other)], project, env=e, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    # the flow's log: one line per record, one timestamp (Prefect's), the stage's lines at their level
    assert "\r" not in r.stderr and max(len(re.findall(r"\d\d:\d\d:\d\d", line)) for line in r.stderr.splitlines()) == 1
    assert "| INFO    | flows - [render] tasks.render.run: render: " in r.stderr and "[render] INFO " not in r.stderr
    assert (project / "params.yaml").read_text() == other.read_text()
    assert lock(project)["stages"]["render"]["params"]["params.yaml"]["render"]["grid"] == 4
    assert (project / "reports/runs/render.md").is_file()  # the summary the flow published
    data["render"]["grid"] = 5
    other.write_text(yaml.safe_dump(data, sort_keys=False))  # params.yaml is now dirty (uncommitted)
    r = run([sys.executable, "-m", "flows.render", "--params", str(other)], project, env=e, timeout=600, check=False)
    assert r.returncode == 1 and "uncommitted changes" in r.stderr and "Traceback" not in r.stderr
    assert "grid: 4" in (project / "params.yaml").read_text()
