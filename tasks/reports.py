"""Run reports: how a stage's last run went on this machine (timings, throughput, threads).

They live in `reports/runs/<stage>.json`, outside DVC and git (reports/ is ignored), because an
artifact holds what the data and the model are, never how fast this machine was: the same
inputs then rebuild the same bytes."""

from __future__ import annotations

import datetime
from pathlib import Path

from tasks.fileio import atomic_write_json

RUN_REPORTS = Path("reports") / "runs"


def write_run_report(stage: str, report: dict, root: str | Path = ".") -> Path:
    path = Path(root) / RUN_REPORTS / f"{stage}.json"
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(path, {"stage": stage, "finished_at": stamp, **report})
    return path
