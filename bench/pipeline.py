"""What orchestration costs, measured in the same run.

1. Prefect on top of DVC: the whole DAG on ~1,000 images as `python -m flows.pipeline --no-pause`
   (an ephemeral Prefect API, with --no-pause one task running one `dvc repro` of every stage) against plain
   `dvc repro` of the same DAG on the same inputs. Each round builds two fresh copies of the
   project and runs one of each, the order alternating; the ratio of the medians is printed
   (goal <= 1.10).
2. DVC itself: a plain `dvc repro` against the sum of its stages' own work (each stage's wall time
   from its run report, reports/runs/<stage>.json), from the same plain runs.

    python bench/pipeline.py [--images 1000] [--rounds 3]

The copies train a tiny model for a few steps: the training work is the same under both, so the
figures are about orchestration, not about the GAN."""

from __future__ import annotations

import argparse
import json
import statistics
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    plain, prefect, work = [], [], []
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
                else:
                    prefect.append(timed([sys.executable, "-m", "flows.pipeline", "--no-pause"], project,
                                         {"PREFECT_HOME": str(project / ".prefect")}))
            print(f"round {r + 1}: dvc repro {plain[-1]:.1f} s (stages' own work {work[-1]:.1f} s), "
                  f"Prefect pipeline {prefect[-1]:.1f} s", flush=True)
    p, q, w = statistics.median(plain), statistics.median(prefect), statistics.median(work)
    print(f"\n{args.images} images, {args.rounds} rounds, medians:")
    print(f"  Prefect pipeline / plain dvc repro: {q:.1f} s / {p:.1f} s = {q / p:.3f}  (goal <= 1.10)")
    print(f"  plain dvc repro / its stages' own work: {p:.1f} s / {w:.1f} s = {p / w:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
