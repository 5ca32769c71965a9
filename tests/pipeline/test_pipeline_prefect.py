"""The data engineer's path through a real Prefect server and worker (scripts/serve.sh, what `make
serve` runs, on a project copy without .prefect/): `prefect deploy --all` from prefect.yaml, a
deployment run of the pipeline suspended for review, the reviewer's merge and resume, a consistent
workspace at the end, stage logs read back from the API, a no-op rerun that does not stop, a bad
param as one line, a worker killed and restarted, a run whose process died crashed by the server's
automation (one cancelled after it died ends Cancelled, one is reaped by hand), Ctrl-C.
One server for the module: the tests run in file order and share it."""

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

from tests.conftest import ROOT
from tests.support.project import env, make_copy, run
from tests.support.review import read_queue, write_queue

TINY_TRAIN = {
    "train": {"loop": {"steps": 6, "checkpoint_every": 3, "log_every": 3, "threads": 2, "progress": False},
              "optim": {"batch": 8}},
    "render": {"eval_samples": 16, "batch": 16, "grid": 2, "variations": 2},
}
STAGES = ["scrape", "detect", "review", "tag", "release", "train", "render", "export"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect_state(args: list[str], cwd, e) -> str:
    return run([sys.executable, "-m", "tests.support.prefect_state", *args], cwd, env=e, timeout=60).stdout


def state_of(run_id, cwd, e) -> tuple[str, str]:
    out = prefect_state([run_id], cwd, e).split(" ", 2)
    return out[0], (out[2].strip() if len(out) > 2 else "")


def wait_for(run_id, cwd, e, want: set[str], timeout: float) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = state_of(run_id, cwd, e)
        if st[0] in want | {"FAILED", "CRASHED", "CANCELLED", "COMPLETED"}:
            return st
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} not in {want} after {timeout}s (last: {st})")


def processes(project, needle: str) -> list[int]:
    """Pids of the processes whose command line holds `needle` and whose cwd is the project."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if needle in args and Path(cwd).resolve() == Path(project).resolve():
            found.append(int(proc.name))
    return found


def deployment_run(name: str, project, e, *params: str) -> str:
    cmd = ["prefect", "deployment", "run", name]
    for p in params:
        cmd += ["--param", p]
    return re.search(r"UUID:\s*([0-9a-f-]{36})", run(cmd, project, env=e).stdout).group(1)


def wait_log(path: Path, text: str, proc, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, path.read_text()[-3000:]
        time.sleep(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """scripts/serve.sh in a session of its own, as a terminal runs `make serve` (Ctrl-C: SIGINT to the group)."""
    tmp = tmp_path_factory.mktemp("served")
    project = make_copy(tmp / "proj", TINY_TRAIN)
    assert not (project / ".prefect").exists()  # a fresh clone
    port = free_port()
    e = env({"PREFECT_HOME": str(project / ".prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
             "PREFECT_PORT": str(port), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             # short crash windows (make serve: 30 s heartbeats, 90 s, 60 s); 30 s is Prefect's minimum beat
             "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "MOEFLOW_CRASH_AFTER_S": "60", "MOEFLOW_CANCEL_AFTER_S": "20"})
    log = tmp / "serve.log"
    # A terminal's job has SIGINT at its default; `make test &` (a background job of a script) hands its
    # children SIGINT ignored, which bash can then never trap: give the script the terminal's default.
    serve = subprocess.Popen(["bash", "scripts/serve.sh"], cwd=project, env=e, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_log(log, "Prefect UI:", serve)
        yield {"project": project, "env": e, "log": log, "serve": serve, "port": port}
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        for pid in processes(project, "prefect") + processes(project, "dvc"):  # what a failed test left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.timeout(1200)  # the tiny pipeline twice through a worker; its own waits are bounded
def test_review_round_trip_through_a_deployment_leaves_the_workspace_consistent(served):
    project, e, log = served["project"], served["env"], served["log"]
    names = run(["prefect", "deployment", "ls"], project, env=e).stdout
    for flow in ["pipeline", "fetch"] + STAGES:
        assert f"{flow}/default" in names, names
    run_id = deployment_run("pipeline/default", project, e)
    st = wait_for(run_id, project, e, {"PAUSED"}, timeout=420)
    assert st[0] == "PAUSED", (st, log.read_text()[-4000:])
    assert "Suspended" in prefect_state([run_id, "--name"], project, e)
    assert not (project / "data" / "tags" / "tags.parquet").exists()
    time.sleep(3)
    assert not processes(project, "prefect.engine"), "a process still waits for the reviewer"

    # the stages' own lines and the suspend hint (full id, exact command) are in the run's logs, in the API
    logs = prefect_state([run_id, "--logs"], project, e)
    assert "[detect] tasks.stage: detect: done in" in logs and "[review] tasks.stage: review: done in" in logs, logs[-3000:]
    resume = f"python -m flows.pipeline resume {run_id}"
    assert f"pipeline suspended for review" in logs and resume in logs, logs[-3000:]
    assert resume in prefect_state([run_id, "--artifact", "review-queue"], project, e)
    assert resume in run([sys.executable, "-m", "flows.pipeline", "waiting"], project, env=e).stdout

    # the reviewer marks two faces, merges, resumes
    queue = project / "review" / "queue.csv"
    assert not queue.is_symlink() and queue.stat().st_nlink == 1, "the stop leaves queue.csv linked into DVC's cache"
    rows = read_queue(queue)
    for row in rows[:2]:
        row["false_positive"] = "1"
    write_queue(queue, rows)
    merged = run([sys.executable, "-m", "tasks.review", "merge"], project, env=e)
    assert "merged 2 verdicts" in merged.stdout and f"then resume flow run " in merged.stdout, merged.stdout
    assert f"({run_id}), waiting for review here since" in merged.stdout and resume in merged.stdout, merged.stdout
    out = run([sys.executable, "-m", "flows.pipeline", "resume", run_id, "--note", "two false positives"], project, env=e)
    assert out.stdout.strip().startswith(f"resumed flow run {run_id}") and len(out.stdout.strip().splitlines()) == 1, out
    st = wait_for(run_id, project, e, {"COMPLETED"}, timeout=600)
    assert st[0] == "COMPLETED", (st, log.read_text()[-4000:])
    assert not (project / "reports" / "review_waiting.json").exists(), "merge would still name the finished run"

    # consistent: DVC has nothing to do, and the metrics, the card and the artifacts tell the reviewed counts
    status = run(["dvc", "status"], project, env=e).stdout
    assert "changed" not in status and "modified" not in status, status
    metrics = json.loads((project / "review" / "metrics.json").read_text())
    assert metrics["reviewed"] == 2, metrics
    card = (project / "reports" / "dataset_card.md").read_text()
    assert "| total.reviewed | 2 |" in card and "| total.false_positive | 2 |" in card, card
    for section in ("## Sources and counts", "## Review", "## Model", "## DVC data version"):
        assert section in card, section
    assert metrics["faces"] == 50, metrics  # 52 kept, 2 marked false positive: 50 reach training
    assert "Passed downstream: **50** faces" in prefect_state([run_id, "--artifact", "review-summary"], project, e)
    logs = prefect_state([run_id, "--logs"], project, e)
    assert "[review] Running stage 'review'" in logs.split("review approved")[0].split(resume)[-1] or \
        logs.count("[review] Running stage 'review'") == 2, logs[-4000:]

    # the reviewer's mistakes: one line each
    for args, says in ((["resume", run_id], "is not waiting for review: it is Completed"),
                       (["resume", "not-an-id"], "is not a flow run id"),
                       (["resume", "0b5e8a2c-8a47-4fb4-9d34-1bd1f0a5b000"], "no flow run 0b5e8a2c")):
        r = run([sys.executable, "-m", "flows.pipeline", *args], project, env=e, check=False)
        assert r.returncode != 0 and r.stderr.startswith("error: ") and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    no_api = {k: v for k, v in e.items() if k != "PREFECT_API_URL"}
    r = run([sys.executable, "-m", "flows.pipeline", "resume", run_id], project, env=no_api, check=False)
    assert r.returncode != 0 and "error: no Prefect API configured" in r.stderr, r.stderr
    assert "temporary server" not in r.stderr.lower()

    # a no-op rerun: up to date, nothing new to review: it does not stop
    again = deployment_run("pipeline/default", project, e)
    st = wait_for(again, project, e, {"COMPLETED"}, timeout=300)
    assert st[0] == "COMPLETED", (st, log.read_text()[-4000:])
    logs = prefect_state([again, "--logs"], project, e)
    assert "no stop for review (review_pause=pending: review was up to date)" in logs, logs[-3000:]
    assert "dataset card up to date: no stage ran" in logs, logs[-3000:]  # the card the reviewed run wrote stands
    assert "| total.reviewed | 2 |" in (project / "reports" / "dataset_card.md").read_text()
    assert "changed" not in run(["dvc", "status"], project, env=e).stdout


def test_a_bad_param_fails_the_run_with_one_line(served):
    project, e, log = served["project"], served["env"], served["log"]
    bad = project / "bad.yaml"
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["detect"]["min_faec"] = 3
    bad.write_text(yaml.safe_dump(params))
    run_id = deployment_run("pipeline/default", project, e, "params_path=bad.yaml")
    st = wait_for(run_id, project, e, {"FAILED"}, timeout=300)
    assert st[0] == "FAILED" and "min_faec" in st[1], st
    time.sleep(3)  # the worker reports the process's exit
    logs = prefect_state([run_id, "--logs"], project, e)
    assert "ERROR" in logs and "min_faec" in logs, logs
    for text in (logs, log.read_text()):
        assert "unexpected exception" not in text and "Traceback" not in text, text[-4000:]


def test_a_killed_worker_is_restarted_and_the_server_stays(served):
    project, e, log, serve = served["project"], served["env"], served["log"], served["serve"]
    workers = processes(project, "worker start --pool moeflow")
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)
    wait_log(log, "serve: the worker exited (status 137); starting a new one", serve, timeout=60)
    deadline = time.monotonic() + 60
    while not [p for p in processes(project, "worker start --pool moeflow") if p != workers[0]]:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)
    assert "pipeline/default" in run(["prefect", "deployment", "ls"], project, env=e).stdout  # the server is up


def start_long_train(project, e) -> str:
    """A deployment run of train/default that lasts, once its stage process runs: its run id."""
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("steps: 6", "steps: 100000"))  # a train that lasts
    run_id = deployment_run("train/default", project, e)
    deadline = time.monotonic() + 420  # the stages before train run first when the module's first tests did not
    while not processes(project, "tasks.train"):
        assert time.monotonic() < deadline and state_of(run_id, project, e)[0] in {"SCHEDULED", "PENDING", "RUNNING"}
        time.sleep(1)
    return run_id


def kill_worker_and_flow_process(project) -> None:
    """SIGKILL the worker and the flow-run process: nothing on this machine is left to report the run."""
    for pid in processes(project, "worker start --pool moeflow") + processes(project, "prefect.engine"):
        os.kill(pid, signal.SIGKILL)


def end_orphans(project) -> None:
    """The killed flow process's `dvc repro` and stage (SIGTERMed as it died): gone before the next test."""
    for pid in processes(project, "dvc") + processes(project, "tasks.train"):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while processes(project, "tasks.train") and time.monotonic() < deadline:
        time.sleep(1)


@pytest.mark.timeout(600)
def test_a_run_whose_process_died_is_crashed_by_the_server(served):
    """Flow process and worker SIGKILLed: no heartbeat; the server's automation (make serve's, here
    30 s heartbeats and a 60 s window) marks the run Crashed."""
    project, e, log = served["project"], served["env"], served["log"]
    run_id = start_long_train(project, e)
    engines = processes(project, "prefect.engine")
    assert engines, "no flow process"
    for pid in engines:  # the worker hands make serve's heartbeat frequency to the flow process
        assert b"PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30\0" in Path(f"/proc/{pid}/environ").read_bytes()
    kill_worker_and_flow_process(project)
    try:
        st = wait_for(run_id, project, e, {"CRASHED"}, timeout=300)
        assert st[0] == "CRASHED" and "no heartbeat from its flow process for 60s" in st[1], (st, log.read_text()[-3000:])
    finally:
        end_orphans(project)


@pytest.mark.timeout(600)
def test_cancelling_a_run_whose_process_died_ends_cancelled(served):
    """Flow process and worker SIGKILLed, then the run cancelled: nothing stops it, the server's
    automation (here 20 s) sets it Cancelled."""
    project, e, log = served["project"], served["env"], served["log"]
    run_id = start_long_train(project, e)
    kill_worker_and_flow_process(project)
    try:
        run(["prefect", "flow-run", "cancel", run_id], project, env=e)
        st = wait_for(run_id, project, e, {"CANCELLED"}, timeout=300)
        assert st[0] == "CANCELLED" and "still Cancelling 20s after the cancel" in st[1], (st, log.read_text()[-3000:])
    finally:
        end_orphans(project)


def test_a_run_whose_process_died_is_reaped(served):
    """Worker and flow process SIGKILLed: the run stays RUNNING until the automation's window ends;
    `reap` (the manual fallback) marks it Crashed at once."""
    project, e = served["project"], served["env"]
    run_id = start_long_train(project, e)
    kill_worker_and_flow_process(project)
    try:
        time.sleep(5)
        assert state_of(run_id, project, e)[0] == "RUNNING"
        out = run([sys.executable, "-m", "flows.pipeline", "reap"], project, env=e).stdout
        assert f"{run_id}" in out and "Running -> Crashed" in out, out
        st = state_of(run_id, project, e)
        assert st[0] == "CRASHED" and "is gone" in st[1], st
    finally:
        end_orphans(project)


def test_ctrl_c_stops_the_worker_and_the_server(served):
    project, log, serve, port = served["project"], served["log"], served["serve"], served["port"]
    os.killpg(serve.pid, signal.SIGINT)  # what a terminal sends to `make serve`'s group
    assert serve.wait(60) == 130, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text and "did not stop within" not in text, text[-4000:]
    assert not processes(project, "worker start") and not processes(project, "server start")
    with socket.socket() as sock:
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


def test_the_automations_refuse_a_crash_window_within_the_heartbeat(tmp_path):
    """A window no longer than the heartbeat would crash every live run: one line, nothing created."""
    e = env({"PREFECT_HOME": str(tmp_path / "ph"), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
             "PREFECT_API_URL": "http://127.0.0.1:9/api"})
    r = run([sys.executable, "-m", "flows.automations", "--crash-after", "30"], ROOT, env=e, check=False)
    assert r.returncode == 1 and r.stderr.startswith("error: --crash-after 30s must exceed the heartbeat"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not r.stdout, r
    r = run([sys.executable, "-m", "flows.automations"], ROOT, env=e, check=False)  # no server there
    assert r.returncode == 1 and r.stderr.startswith("error: cannot reach the Prefect API"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
