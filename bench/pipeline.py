"""What orchestration costs, measured in the same run.

1. Prefect on top of DVC: the whole DAG on ~1,000 images as `python -m flows.pipeline --no-pause`
   (an ephemeral Prefect API, with --no-pause one task running one `dvc repro` of every stage) against plain
   `dvc repro` of the same DAG on the same inputs. Each round builds two fresh copies of the
   project and runs one of each, the order alternating; the ratio of the medians is printed
   (goal <= 1.10). `--deployment`: the Prefect side is a deployment run of `pipeline/default`
   (review_pause=never) through scripts/serve.sh on the fresh copy instead, timed as its flow-run
   time (end_time - start_time from the API) and from `prefect deployment run` to its end.
2. DVC itself: a plain `dvc repro` against the sum of its stages' own work (each stage's wall time
   from its run report, reports/runs/<stage>.json), from the same plain runs.
3. `--noop`: a no-op deployment run of `pipeline/default` through `make serve`'s server and worker
   (scripts/serve.sh on a copy of the project, the 46 illustrations, every stage up to date)
   against a no-op `dvc repro` in the same workspace, interleaved; the run's flow-run time is its
   end_time - start_time as the Prefect API records them (from the engine's Running to its
   Completed: the flow process's start and the worker's polling are not in it). Goal <= 3x.

    python bench/pipeline.py [--images 1000] [--rounds 3] [--deployment]
    python bench/pipeline.py --noop [--rounds 5]

The copies train a tiny model for a few steps: the training work is the same under both, so the
figures are about orchestration, not about the GAN."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.dag import load_dag  # noqa: E402
from tests.support.project import SHARED, env, make_copy, run  # noqa: E402

SMALL = {
    "detect": {"min_face": 64, "box_scale": 1.25},
    "scrape": {"filters": {"min_width": 64, "min_height": 64}},
    "train": {"model": {"g_channels": 8, "g_blocks": 1, "g_up_channels": [], "d_channels": [8, 16, 32]},
              "optim": {"batch": 8}, "loop": {"steps": 20, "checkpoint_every": 10, "log_every": 10, "threads": 1,
                                              "progress": False}},
    "render": {"eval_samples": 64, "batch": 32, "grid": 4, "variations": 2},
}


def image_folder(dest: Path, n: int) -> Path:
    """n images: the 46 illustrations and real face crops, as symlinks (nothing copied)."""
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted((SHARED / "data" / "real").iterdir())
    files += sorted((SHARED / "data" / "faces_train").glob("*.jpg"))[: max(0, n - len(files))]
    for f in files:
        (dest / f.name).symlink_to(f)
    return dest


def timed(cmd: list[str], cwd: Path, extra_env: dict | None = None) -> float:
    t = time.perf_counter()
    run(cmd, cwd, env=env(extra_env), timeout=3600)
    return time.perf_counter() - t


def stage_work(project: Path) -> float:
    """The stages' own wall time, from the run reports of every stage in dvc.yaml (each one ran)."""
    return sum(json.loads((project / "reports" / "runs" / f"{s}.json").read_text())["wall_s"]
               for s in load_dag(project))


def served(project: Path, log: Path) -> tuple[subprocess.Popen, dict]:
    """scripts/serve.sh on the copy (its own session, a free port), up: the process and the env to reach it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = env({"PREFECT_HOME": str(project / ".prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
             "PREFECT_PORT": str(port)})
    serve = subprocess.Popen(["bash", "scripts/serve.sh"], cwd=project, env=e, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while "Prefect UI:" not in log.read_text():
        if serve.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"error: scripts/serve.sh did not start; see {log}")
        time.sleep(1)
    return serve, e


def flow_run_seconds(project: Path, e: dict, *params: str) -> tuple[float, float]:
    """One deployment run of pipeline/default to its end: end_time - start_time from the API, and
    the wall time from `prefect deployment run` to the end seen (the worker's polling included)."""
    t0 = time.perf_counter()
    cmd = ["prefect", "deployment", "run", "pipeline/default"]
    for p in params:
        cmd += ["--param", p]
    out = run(cmd, project, env=e).stdout
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + 600
    # each round's server has a port of its own: the settings Prefect read at import would name the first
    with temporary_settings(updates={PREFECT_API_URL: e["PREFECT_API_URL"]}), get_client(sync_client=True) as c:
        while True:
            fr = c.read_flow_run(run_id)
            if fr.state and fr.state.is_final():
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"error: flow run {run_id} still {fr.state.name} after 600 s")
            time.sleep(0.5)
    if not fr.state.is_completed():
        raise SystemExit(f"error: flow run {run_id} ended {fr.state.name}: {fr.state.message}")
    return (fr.end_time - fr.start_time).total_seconds(), time.perf_counter() - t0


def noop(rounds: int) -> int:
    """Goal (a): a no-op deployment run's flow-run time against a no-op `dvc repro`, same workspace."""
    plain, flow = [], []
    with tempfile.TemporaryDirectory(prefix="moeflow-bench-") as tmp:
        project = make_copy(Path(tmp) / "proj", SMALL)
        run(["dvc", "repro"], project, timeout=3600)  # every stage up to date
        serve, e = served(project, Path(tmp) / "serve.log")
        os.environ.update(PREFECT_API_URL=e["PREFECT_API_URL"], PREFECT_HOME=e["PREFECT_HOME"])
        try:
            flow_run_seconds(project, e)  # the first run: imports compiled, the worker warm
            for r in range(rounds):
                for kind in (("plain", "flow") if r % 2 == 0 else ("flow", "plain")):
                    if kind == "plain":
                        plain.append(timed(["dvc", "repro"], project))
                    else:
                        flow.append(flow_run_seconds(project, e)[0])
                print(f"round {r + 1}: no-op dvc repro {plain[-1]:.2f} s, no-op deployment run {flow[-1]:.2f} s "
                      "(flow-run time)", flush=True)
        finally:
            os.killpg(serve.pid, signal.SIGINT)
            serve.wait(60)
    p, q = statistics.median(plain), statistics.median(flow)
    print(f"\nno-op, {rounds} rounds, medians (load average {os.getloadavg()[0]:.2f}):")
    print(f"  deployment run pipeline/default (flow-run time) / dvc repro: {q:.2f} s / {p:.2f} s = {q / p:.2f}  "
          "(goal <= 3)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--noop", action="store_true", help="the no-op deployment run against a no-op dvc repro")
    ap.add_argument("--deployment", action="store_true",
                    help="the Prefect side as a deployment run (review_pause=never) through scripts/serve.sh: "
                         "its flow-run time")
    args = ap.parse_args()
    if args.noop:
        return noop(args.rounds)
    plain, prefect, work, walls = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="moeflow-bench-") as tmp:
        tmp = Path(tmp)
        folder = image_folder(tmp / "images", args.images)
        params = {**SMALL, "scrape": {**SMALL["scrape"], "folder": str(folder)}}
        for r in range(args.rounds):
            order = ("plain", "prefect") if r % 2 == 0 else ("prefect", "plain")
            for kind in order:
                project = make_copy(tmp / f"{kind}-{r}", params)
                if kind == "plain":
                    plain.append(timed(["dvc", "repro"], project))
                    work.append(stage_work(project))
                elif args.deployment:
                    serve, e = served(project, tmp / f"serve-{r}.log")
                    os.environ.update(PREFECT_API_URL=e["PREFECT_API_URL"], PREFECT_HOME=e["PREFECT_HOME"])
                    try:
                        flow_s, wall_s = flow_run_seconds(project, e, "review_pause=never")
                    finally:
                        os.killpg(serve.pid, signal.SIGINT)
                        serve.wait(60)
                    prefect.append(flow_s)
                    walls.append(wall_s)
                else:
                    prefect.append(timed([sys.executable, "-m", "flows.pipeline", "--no-pause"], project,
                                         {"PREFECT_HOME": str(project / ".prefect")}))
            print(f"round {r + 1}: dvc repro {plain[-1]:.1f} s (stages' own work {work[-1]:.1f} s), "
                  f"Prefect pipeline {prefect[-1]:.1f} s", flush=True)
    p, q, w = statistics.median(plain), statistics.median(prefect), statistics.median(work)
    print(f"\n{args.images} images, {args.rounds} rounds, medians (load average {os.getloadavg()[0]:.2f}):")
    what = "deployment run (flow-run time)" if args.deployment else "Prefect pipeline"
    print(f"  {what} / plain dvc repro: {q:.1f} s / {p:.1f} s = {q / p:.3f}  (goal <= 1.10)")
    if walls:
        wm = statistics.median(walls)
        print(f"  deployment run from `prefect deployment run` to its end seen / plain dvc repro: "
              f"{wm:.1f} s / {p:.1f} s = {wm / p:.3f}")
    print(f"  plain dvc repro / its stages' own work: {p:.1f} s / {w:.1f} s = {p / w:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
