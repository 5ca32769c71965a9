"""The pipeline through a real Prefect server and worker: `prefect deploy --all` from prefect.yaml,
`prefect deployment run 'pipeline/default'`, the review pause resumed programmatically, then done."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support.project import env, make_copy, run

TINY_TRAIN = {
    "train": {"loop": {"steps": 6, "checkpoint_every": 3, "log_every": 3, "threads": 2, "progress": False},
              "optim": {"batch": 8}},
    "render": {"eval_samples": 16, "batch": 16, "grid": 2, "variations": 2},
}

def state_name(run_id, cwd, e) -> str:
    return run([sys.executable, "-m", "tests.support.prefect_state", run_id, "--name"], cwd, env=e, timeout=60).stdout.strip()


def flow_processes(project) -> list[str]:
    """Processes running a flow run in this project (the worker starts one per flow run)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if "prefect.engine" in args and Path(cwd).resolve() == Path(project).resolve():
            found.append(args)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state_of(run_id, cwd, e) -> tuple[str, str]:
    out = run([sys.executable, "-m", "tests.support.prefect_state", run_id], cwd, env=e, timeout=60).stdout.split(" ", 2)
    return out[0], (out[2].strip() if len(out) > 2 else "")


def wait_for(run_id, cwd, e, want: set[str], timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = state_of(run_id, cwd, e)
        if st[0] in want or st[0] in {"FAILED", "CRASHED", "CANCELLED"}:
            return st
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} not in {want} after {timeout}s (last: {st})")


@pytest.mark.timeout(900)  # a server, a worker and the whole tiny pipeline twice; its own waits are bounded
def test_deployment_run_pauses_for_review_and_resumes(tmp_path):
    """`make serve` (scripts/serve.sh): server, work pool, deployments, worker; then a deployment run."""
    project = make_copy(tmp_path / "proj", TINY_TRAIN)
    port = free_port()
    e = env({"PREFECT_HOME": str(project / ".prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
             "PREFECT_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    (project / ".prefect").mkdir()
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(["bash", "scripts/serve.sh"], cwd=project, env=e, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while "Prefect UI:" not in log.read_text():
            assert serve.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        names = run(["prefect", "deployment", "ls"], project, env=e).stdout
        for flow in ("pipeline", "scrape", "detect", "review", "tag", "release", "train", "render", "export"):
            assert f"{flow}/default" in names, names
        out = run(["prefect", "deployment", "run", "pipeline/default"], project, env=e).stdout
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)

        st = wait_for(run_id, project, e, {"PAUSED"}, timeout=420)
        assert st[0] == "PAUSED", (st, log.read_text()[-4000:])
        assert (project / "review" / "queue.csv").exists() and not (project / "data" / "tags" / "tags.parquet").exists()
        # suspended, not paused in a process: the worker holds no flow-run process for the reviewer
        assert st[1].startswith("Suspended") or "Suspended" in state_name(run_id, project, e), st
        time.sleep(3)
        assert not flow_processes(project), "a process still waits for the reviewer"

        run([sys.executable, "-m", "flows.pipeline", "resume", run_id, "--note", "looked fine"], project, env=e)
        st = wait_for(run_id, project, e, {"COMPLETED"}, timeout=600)
        assert st[0] == "COMPLETED", (st, log.read_text()[-4000:])
        for rel in ("data/tags/tags.parquet", "data/train/generator.safetensors", "data/render/samples/grid.png",
                    "data/export/generator.onnx", "dvc.lock"):
            assert (project / rel).exists(), rel
        card = (project / "reports" / "dataset_card.md").read_text()
        for section in ("## Sources and counts", "## Opt-outs honoured", "## Review", "## Tag frequencies",
                        "## Model", "## Training metrics", "## DVC data version"):
            assert section in card, section
        assert "| images | 45 |" in card and "dvc_lock_sha256" in card
        stages = ["scrape", "detect", "review", "tag", "release", "train", "render", "export"]
        status = run(["dvc", "status"] + stages, project, env=e).stdout
        assert "changed" not in status, status  # DVC recorded every stage the flow ran

        # an experiment: one param changed, DVC reruns what depends on it and compares the metrics
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
        run(git + ["add", "-A"], project, env=e)
        run(git + ["commit", "-qm", "pipeline run"], project, env=e)
        out = run(["dvc", "exp", "run", "-n", "higher-lr", "-S", "train.optim.lr=0.0002"], project, env=e, timeout=600).stdout
        assert "Running stage 'train'" in out and "Running stage 'detect'" not in out, out
        shown = json.loads(run(["dvc", "exp", "show", "--json"], project, env=e).stdout)
        assert "higher-lr" in json.dumps(shown) and "loss_d" in json.dumps(shown)

        # a per-stage deployment runs `dvc repro review` under DVC: dvc.lock records the new params
        params = project / "params.yaml"
        params.write_text(params.read_text().replace("thumb_size: 96", "thumb_size: 48"))
        out = run(["prefect", "deployment", "run", "review/default"], project, env=e).stdout
        stage_run = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
        st = wait_for(stage_run, project, e, {"COMPLETED"}, timeout=300)
        assert st[0] == "COMPLETED", (st, log.read_text()[-4000:])
        lock = yaml.safe_load((project / "dvc.lock").read_text())
        assert lock["stages"]["review"]["params"]["params.yaml"]["review"]["thumb_size"] == 48
        assert "changed" not in run(["dvc", "status", "review"], project, env=e).stdout
    finally:
        serve.send_signal(signal.SIGTERM)  # serve.sh stops its worker, then the server
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            serve.kill()
            raise
    with socket.socket() as sock:  # serve.sh stopped the server too
        assert sock.connect_ex(("127.0.0.1", port)) != 0, f"the Prefect server still listens on {port}"


def test_review_pause_timeout_fails_with_a_clear_message(tmp_path):
    """Ephemeral mode (no server): the pause times out and the run fails with one clear line."""
    project = make_copy(tmp_path / "proj")
    r = run([sys.executable, "-m", "flows.pipeline", "--stages", "scrape,detect,review,tag", "--review-timeout", "3"],
            project, check=False, timeout=600,
            env=env({"PREFECT_HOME": str(tmp_path / "ph"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "error: no reviewer resumed the run within 3s" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (project / "data" / "tags" / "tags.parquet").exists()
