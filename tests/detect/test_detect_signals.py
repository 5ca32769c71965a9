"""SIGTERM to a stage's main process alone (`kill PID`, a supervisor that signals one process) stops it
as Ctrl-C does: its pool's worker processes are shut down with it (they used to keep computing for
45 minutes with their parent gone), the `interrupted` line, exit 143, and the rerun resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import ROOT, deep_update
from tests.support.detect import CASCADE, SHARED, write_manifest

DATA = SHARED / "data"  # the 2,000 + 6,000 crops of faces/ and faces_train/: a run of ~15 s on 2 workers


def children(pid: int) -> list[int]:
    """The live processes whose parent is pid (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def detect_stage(ws: Path, params: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tasks.detect", "--params", str(params), "--manifest",
                             "m.parquet", "--images", str(DATA), "--boxes", "none.parquet"],
                            cwd=ws, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # a group of its own


def test_sigterm_to_the_main_process_stops_its_workers_and_the_rerun_resumes(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    files = sorted(p for d in ("faces", "faces_train") for p in (DATA / d).iterdir())
    write_manifest(ws / "m.parquet", files, DATA)
    n = len(set(pq.read_table(ws / "m.parquet", columns=["image_id"]).column("image_id").to_pylist()))
    assert n > 7900  # a few crops are in both folders
    out = {k: str(ws / "faces" / v) for k, v in (("crops", "crops"), ("faces", "faces.parquet"),
                                                ("images", "images.parquet"), ("detector", "detector.json"),
                                                ("contact_sheet", "sheet.png"), ("summary", "summary.json"),
                                                ("metrics", "metrics.json"))}
    base = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(deep_update(base, {"detect": {"cascade": str(CASCADE), "workers": 2,
                                                                   "out": out}}), sort_keys=False), encoding="utf-8")
    proc = detect_stage(ws, params)
    try:
        workers: list[int] = []
        for _ in range(1200):  # the pool's two workers are up
            workers = children(proc.pid)
            if len(workers) >= 2:
                break
            assert proc.poll() is None, proc.communicate()
            threading.Event().wait(0.05)
        assert len(workers) >= 2, "the detect pool never started"
        threading.Event().wait(4.0)  # the workers start and finish some images (kept for the rerun)
        assert proc.poll() is None, "detect ended before the signal: give it more images"
        os.kill(proc.pid, signal.SIGTERM)  # the main process alone, not its group
        proc.wait(timeout=120)
        for _ in range(100):
            if not any(alive(w) for w in workers):
                break
            threading.Event().wait(0.1)
        left = [w for w in workers if alive(w)]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its group (workers keep the group alive)
        except ProcessLookupError:
            pass
        _, err = proc.communicate(timeout=120)  # the workers hold its stderr open until they end
    assert not left, f"detect's workers outlived it: {left}"
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.rstrip().endswith("interrupted: rerun the same command to resume") and "Traceback" not in err, err
    assert "WARNING tasks.stage: SIGTERM: stopping (rerun the same command to resume)" in err

    again = detect_stage(ws, params)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    summary = json.loads(Path(out["summary"]).read_text())
    assert summary["images"] == n, summary
    processed, reused = map(int, re.search(rf"images: {n} \((\d+) processed now, .* (\d+) reused\)", err).groups())
    assert processed + reused == n and 0 < reused < n, err  # what the stopped run had done is kept


if __name__ == "__main__":
    pytest.main([__file__, "-v"])
