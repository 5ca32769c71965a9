"""Run reports: how a stage's last run went on this machine (timings, throughput, threads).

They live in `reports/runs/<stage>.json`, outside DVC and git (reports/ is ignored), because an
artifact holds what the data and the model are, never how fast this machine was: the same
inputs then rebuild the same bytes."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from tasks.fileio import atomic_write_json

RUN_REPORTS = Path("reports") / "runs"


def report_path(stage: str, root: str | Path = ".") -> Path:
    return Path(root) / RUN_REPORTS / f"{stage}.json"


def write_run_report(stage: str, report: dict, root: str | Path = ".") -> Path:
    """Add `report` to the stage's report of this run (tasks.stage starts each run with none)."""
    path = report_path(stage, root)
    old = json.loads(path.read_text()) if path.is_file() else {}
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(path, {**old, "stage": stage, "finished_at": stamp, **report})
    return path
